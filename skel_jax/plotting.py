"""Timeline plots of frame labels and skeleton animations.

Uses the object-oriented Matplotlib API with the Agg canvas, so it never
touches pyplot's global backend state and works on headless machines.
"""

import numpy as np
from matplotlib import animation
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from skel_jax import graph
from skel_jax.postprocess import labels_to_segments

_BACKGROUND_COLOR = '#e6e6e6'


def _class_colors(num_classes: int) -> list:
  cmap = colormaps['tab10' if num_classes <= 10 else 'tab20']
  return [cmap(i % cmap.N) for i in range(num_classes)]


def _draw_bar(ax, y, segments, num_frames, colors, height=0.8, alphas=None):
  """One horizontal bar: grey background, a coloured span per segment."""
  ax.broken_barh(
    [(0, num_frames)], (y - height / 2, height), facecolors=_BACKGROUND_COLOR
  )
  for i, seg in enumerate(segments):
    label, start, end = int(seg[0]), seg[1], seg[2]
    alpha = 1.0 if alphas is None else alphas[i]
    ax.broken_barh(
      [(start, end - start)],
      (y - height / 2, height),
      facecolors=colors[label % len(colors)],
      alpha=alpha,
    )


def plot_timelines(
  path: str, rows: list, class_names, background: int, dpi: int = 100
) -> str:
  """Saves a PNG with one GT bar and one predicted bar per sequence.

  Args:
    path: output PNG path.
    rows: dicts with 'name' (str), 'gt' ((T,) frame labels), 'pred' ((T,)
      frame labels or None) and optionally 'segments' (predicted
      ``(label, start, end, score)``, end exclusive). Segments are drawn as
      an extra bar with opacity growing with the score rank.
    class_names: names of the classes 0..K-1 (a background name, if
      present at index ``background``, is ignored).
    background: the background label (drawn grey).
    dpi: output resolution.

  Returns:
    ``path``.
  """
  names = [str(n) for n in class_names]
  num_classes = max(len(names), background + 1)
  colors = _class_colors(num_classes)

  bars = []  # (label text, segments, num_frames, alphas)
  for row in rows:
    gt = np.asarray(row['gt']).reshape(-1)
    num_frames = gt.size
    bars.append(
      (
        f'{row["name"]} GT',
        labels_to_segments(gt, background),
        num_frames,
        None,
      )
    )
    if row.get('pred') is not None:
      pred = np.asarray(row['pred']).reshape(-1)
      bars.append(
        (
          f'{row["name"]} pred',
          labels_to_segments(pred, background),
          num_frames,
          None,
        )
      )
    segments = row.get('segments')
    if segments:
      scores = np.asarray([s[3] for s in segments], np.float64)
      ranks = np.argsort(np.argsort(scores))  # 0 = lowest score
      alphas = 0.35 + 0.65 * (ranks + 1) / len(scores)
      bars.append(
        (f'{row["name"]} segments', list(segments), num_frames, alphas)
      )

  fig = Figure(figsize=(10, 0.45 * len(bars) + 1.6))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for i, (_, segs, num_frames, alphas) in enumerate(bars):
    _draw_bar(ax, len(bars) - 1 - i, segs, num_frames, colors, alphas=alphas)
  ax.set_yticks(range(len(bars)))
  ax.set_yticklabels([b[0] for b in reversed(bars)])
  ax.set_ylim(-0.6, len(bars) - 0.4)
  ax.set_xlim(0, max([b[2] for b in bars] + [1]))
  ax.set_xlabel('frame')

  # Every class gets a legend entry so colours read the same across plots.
  handles = [
    Patch(facecolor=colors[c], label=names[c] if c < len(names) else str(c))
    for c in range(num_classes)
    if c != background
  ]
  handles.append(Patch(facecolor=_BACKGROUND_COLOR, label='background'))
  ax.legend(
    handles=handles,
    loc='upper center',
    bbox_to_anchor=(0.5, -0.18),
    ncol=min(len(handles), 6),
    frameon=False,
    fontsize='small',
  )
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  return path


# ---------------------------------------------------------------------------
# Skeleton animation.
# ---------------------------------------------------------------------------
_HEAD = 3
_FEET = (15, 19)
_PERSON_COLORS = ('#1f77b4', '#d62728', '#2ca02c', '#9467bd')


def _projection_axes(joints: np.ndarray, valid: np.ndarray):
  """Picks (horizontal, vertical, vertical_sign) for a 2-D view.

  Args:
    joints: (T, M, V, 3) coordinates.
    valid: (T, M) bool, whether the person is present in the frame.

  Returns:
    Coordinate indices of the horizontal and vertical screen axes and +1/-1
    so that the head is drawn above the feet.
  """
  if not valid.any():
    return 0, 1, 1.0
  pts = joints[valid]  # (N, V, 3)
  head_to_feet = pts[:, _HEAD] - pts[:, list(_FEET)].mean(axis=1)
  vertical = int(np.argmax(np.abs(head_to_feet).mean(axis=0)))
  sign = 1.0 if head_to_feet[:, vertical].mean() >= 0 else -1.0
  # Per-frame body extent (not the sequence range): a frontal view spreads
  # the shoulders and arms, whereas a walk towards the camera would make the
  # depth axis win on the sequence range while showing a side-on stick.
  others = [a for a in range(3) if a != vertical]
  extent = [pts[:, :, a].std(axis=1).mean() for a in others]
  horizontal = others[int(np.argmax(extent))]
  return horizontal, vertical, sign


def _label_name(label, class_names, background):
  label = int(label)
  if background is not None and label == background:
    return 'background'
  if class_names is not None and 0 <= label < len(class_names):
    return str(class_names[label])
  return str(label)


def animate_skeleton(
  path: str,
  skeleton,
  labels=None,
  pred=None,
  class_names=None,
  fps: int = 15,
  stride: int = 2,
  title=None,
  background=None,
) -> str:
  """Writes a GIF of a skeleton sequence with per-frame label captions.

  Args:
    path: output GIF path.
    skeleton: (T, M, 25, 3) joints in the NTU-25 layout; a person whose
      joints are all zero in a frame is absent there and not drawn.
    labels: optional (T,) ground-truth frame labels.
    pred: optional (T,) predicted frame labels.
    class_names: optional names of the classes; labels index into it.
    fps: GIF frame rate.
    stride: draw every ``stride``-th frame.
    title: optional figure title.
    background: the background label, shown as 'background'. Defaults to
      the project convention: the last class, i.e. the last entry of
      ``class_names`` when it is named 'background', else
      ``len(class_names)``.

  Returns:
    ``path``.
  """
  joints = np.asarray(skeleton, np.float32)
  if joints.ndim == 3:  # (T, V, 3): a single person
    joints = joints[:, None]
  if joints.ndim != 4 or joints.shape[-1] != 3:
    raise ValueError(f'skeleton must be (T, M, 25, 3), got {joints.shape}.')
  num_frames, num_persons = joints.shape[:2]
  if num_frames == 0:
    raise ValueError('skeleton has no frames.')
  if background is None and class_names is not None:
    names = list(class_names)
    last = len(names) - 1
    background = (
      last if names and str(names[-1]).lower() == 'background' else len(names)
    )
  labels = None if labels is None else np.asarray(labels).reshape(-1)
  pred = None if pred is None else np.asarray(pred).reshape(-1)

  valid = np.abs(joints).reshape(num_frames, num_persons, -1).max(-1) > 0
  horizontal, vertical, sign = _projection_axes(joints, valid)
  xy = np.stack([joints[..., horizontal], sign * joints[..., vertical]], -1)

  # Fixed, equal-aspect limits over the whole sequence so motion shows.
  if valid.any():
    pts = xy[valid].reshape(-1, 2)
    lo, hi = pts.min(0), pts.max(0)
  else:
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
  centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3) * 1.08

  bones = np.asarray(graph.INWARD)
  # Small figure at low dpi keeps the per-frame Agg render to a few ms.
  fig = Figure(figsize=(3.2, 3.6), dpi=80)
  FigureCanvasAgg(fig)
  ax = fig.add_axes((0.02, 0.02, 0.96, 0.76 if title else 0.81))
  ax.set_xlim(centre[0] - half, centre[0] + half)
  ax.set_ylim(centre[1] - half, centre[1] + half)
  ax.set_aspect('equal', adjustable='box')
  ax.set_xticks([])
  ax.set_yticks([])
  collections = []
  for m in range(num_persons):
    lc = LineCollection(
      [], colors=_PERSON_COLORS[m % len(_PERSON_COLORS)], linewidths=2.0
    )
    ax.add_collection(lc)
    collections.append(lc)
  if title:
    fig.text(0.5, 0.97, str(title), ha='center', va='top', fontsize=9)
  caption = fig.text(
    0.5,
    0.90 if title else 0.95,
    '',
    ha='center',
    va='top',
    fontsize=8,
    family='monospace',
  )

  def draw(t):
    for m, lc in enumerate(collections):
      lc.set_segments(xy[t, m][bones] if valid[t, m] else [])
    # The frame counter also keeps consecutive GIF frames distinct, so Pillow
    # never merges identical frames and the GIF length is predictable.
    lines = [f'frame {t + 1}/{num_frames}']
    if labels is not None and t < labels.size:
      lines.append('GT:   ' + _label_name(labels[t], class_names, background))
    if pred is not None and t < pred.size:
      lines.append('pred: ' + _label_name(pred[t], class_names, background))
    caption.set_text('\n'.join(lines))
    return collections + [caption]

  frames = range(0, num_frames, max(int(stride), 1))
  anim = animation.FuncAnimation(
    fig, draw, frames=frames, blit=False, cache_frame_data=False, repeat=False
  )
  anim.save(path, writer=animation.PillowWriter(fps=fps), dpi=fig.dpi)
  return path


def confusion_text(confusion, class_names):
  """Row-normalised frame confusion (% of each true class) as a text table."""
  c = np.asarray(confusion, np.float64)
  rows = c / np.maximum(c.sum(axis=1, keepdims=True), 1) * 100
  short = [n[:6] for n in class_names]
  width = max(len(n) for n in class_names)
  lines = [' ' * width + ' ' + ' '.join(f'{s:>6}' for s in short)]
  for name, row in zip(class_names, rows):
    lines.append(f'{name:<{width}} ' + ' '.join(f'{v:6.1f}' for v in row))
  return '\n'.join(lines)


def plot_confusion(path, confusion, class_names):
  """Heat map of the row-normalised frame confusion matrix (PNG)."""
  c = np.asarray(confusion, np.float64)
  rows = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
  k = len(class_names)
  fig = Figure(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(rows, cmap='Blues', vmin=0, vmax=1)
  ax.set_xticks(range(k), class_names, rotation=60, ha='right', fontsize=8)
  ax.set_yticks(range(k), class_names, fontsize=8)
  ax.set_xlabel('predicted frame label')
  ax.set_ylabel('true frame label')
  for i in range(k):
    for j in range(k):
      if rows[i, j] >= 0.05:
        ax.text(
          j,
          i,
          f'{rows[i, j]:.2f}',
          ha='center',
          va='center',
          fontsize=6,
          color='white' if rows[i, j] > 0.5 else 'black',
        )
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path
