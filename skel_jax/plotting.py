"""Timeline plots of frame labels, confusion maps and skeleton animations.

Uses the object-oriented Matplotlib API with the Agg canvas, so it never
touches pyplot's global backend state and works on headless machines.

Colours: up to 12 classes take a fixed qualitative palette (``QUALITATIVE``,
every pair far apart in CIELAB); more classes take a Glasbey-style palette
(greedy farthest-point choice in CIELAB from an sRGB grid, skipping greys and
very light colours that would vanish on the grey background). Above 12
classes every bar wide enough carries its class number, which the legend
repeats, so colours never have to be told apart alone.
"""

import functools
import math

import numpy as np
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from skel_jax import graph
from skel_jax.postprocess import labels_to_segments

_BACKGROUND_COLOR = '#e6e6e6'
# Up to 12 classes: hues that stay apart (no light/dark pairs as in tab20).
QUALITATIVE = (
  '#1f77b4',  # blue
  '#ff7f0e',  # orange
  '#2ca02c',  # green
  '#d62728',  # red
  '#9467bd',  # purple
  '#8c564b',  # brown
  '#e377c2',  # pink
  '#bcbd22',  # olive
  '#17becf',  # cyan
  '#000000',  # black
  '#ffff33',  # yellow
  '#1a1a7a',  # navy
)
# The console shows the matrix up to this many classes, else a list.
CONFUSION_TEXT_MAX_CLASSES = 12
# The heat map writes per-cell values up to this many classes.
CONFUSION_CELL_TEXT_MAX = 20


def _srgb_to_lab(rgb):
  """(N, 3) sRGB in [0, 1] -> CIELAB (D65)."""
  rgb = np.asarray(rgb, np.float64)
  lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
  m = np.array(
    [
      [0.4124, 0.3576, 0.1805],
      [0.2126, 0.7152, 0.0722],
      [0.0193, 0.1192, 0.9505],
    ]
  )
  xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
  f = np.where(
    xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29
  )
  lab_l = 116 * f[:, 1] - 16
  lab_a = 500 * (f[:, 0] - f[:, 1])
  lab_b = 200 * (f[:, 1] - f[:, 2])
  return np.stack([lab_l, lab_a, lab_b], -1)


def min_color_distance(colors) -> float:
  """Smallest CIELAB distance (delta E 1976) between two of ``colors``."""
  lab = _srgb_to_lab([mcolors.to_rgb(c) for c in colors])
  d = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1))
  d[np.diag_indices(len(lab))] = np.inf
  return float(d.min())


@functools.lru_cache(maxsize=8)
def _glasbey(num_colors: int) -> tuple:
  """``num_colors`` colours picked greedily to be far apart in CIELAB."""
  steps = np.linspace(0, 1, 18)
  grid = np.stack(np.meshgrid(steps, steps, steps, indexing='ij'), -1)
  grid = grid.reshape(-1, 3)
  lab = _srgb_to_lab(grid)
  chroma = np.hypot(lab[:, 1], lab[:, 2])
  # Not grey-ish (background, 'no label') and not too light or dark.
  keep = (chroma > 25) & (lab[:, 0] > 25) & (lab[:, 0] < 88)
  grid, lab = grid[keep], lab[keep]
  avoid = _srgb_to_lab([mcolors.to_rgb(_BACKGROUND_COLOR), (1, 1, 1)])
  dist = np.min(((lab[:, None] - avoid[None]) ** 2).sum(-1), axis=1)
  chosen = []
  for _ in range(num_colors):
    i = int(np.argmax(dist))
    chosen.append(mcolors.to_hex(grid[i]))
    dist = np.minimum(dist, ((lab - lab[i]) ** 2).sum(-1))
  return tuple(chosen)


def class_colors(num_classes: int) -> list:
  """One colour per class id 0..num_classes-1 (hex strings)."""
  if num_classes <= len(QUALITATIVE):
    return list(QUALITATIVE[:num_classes])
  return list(_glasbey(num_classes))


_class_colors = class_colors  # the old private name


def _text_color(color):
  r, g, b = mcolors.to_rgb(color)
  return 'black' if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else 'white'


def _paint(segments, num_frames):
  """(T,) the label drawn on top at each frame (-1: none), segments painted
  in order."""
  painted = np.full(int(np.ceil(num_frames)), -1)
  for seg in segments:
    start = max(int(seg[1]), 0)
    painted[start : int(np.ceil(seg[2]))] = int(seg[0])
  return painted


def _visible(segments, num_frames):
  painted = _paint(segments, num_frames)
  return set(int(c) for c in np.unique(painted[painted >= 0]))


def _draw_bar(
  ax,
  y,
  segments,
  num_frames,
  colors,
  height=0.8,
  numbers=False,
  edge=False,
  min_text_width=None,
):
  """One horizontal bar: grey background, an opaque span per segment, drawn
  in the given order (the last one on top); ``numbers`` writes each class
  id inside spans at least ``min_text_width`` frames wide."""
  ax.broken_barh(
    [(0, num_frames)], (y - height / 2, height), facecolors=_BACKGROUND_COLOR
  )
  min_width = min_text_width or num_frames / 60.0
  painted = _paint(segments, num_frames)
  for seg in segments:
    label, start, end = int(seg[0]), seg[1], seg[2]
    color = colors[label % len(colors)]
    ax.broken_barh(
      [(start, end - start)],
      (y - height / 2, height),
      facecolors=color,
      edgecolors='white' if edge else 'none',
      linewidth=0.6 if edge else 0,
    )
  if not numbers:
    return
  # Numbers go on what stays visible, so a covered segment shows none.
  change = np.flatnonzero(np.diff(painted)) + 1
  for start, end in zip(
    np.concatenate([[0], change]), np.concatenate([change, [painted.size]])
  ):
    label = int(painted[start])
    if label >= 0 and end - start >= min_width:
      ax.text(
        (start + end) / 2,
        y,
        str(label),
        ha='center',
        va='center',
        fontsize=6,
        color=_text_color(colors[label % len(colors)]),
        clip_on=True,
      )


def _normalise_rows(rows):
  """Accepts one dict per video (``gt`` and ``methods``) or the older one dict
  per (video, method) with ``pred`` / ``segments``; returns the former, with
  consecutive rows of the same video and ground truth merged."""
  videos = []
  for row in rows:
    if 'methods' in row:
      videos.append(
        {
          'name': str(row['name']),
          'gt': np.asarray(row['gt']).reshape(-1),
          'methods': list(row['methods']),
        }
      )
      continue
    gt = np.asarray(row['gt']).reshape(-1)
    video = str(row.get('video', row['name']))
    method = {
      'name': str(row.get('method', 'pred')),
      'pred': row.get('pred'),
      'segments': row.get('segments'),
    }
    last = videos[-1] if videos else None
    if (
      last is not None
      and last['name'] == video
      and last['gt'].shape == gt.shape
      and np.array_equal(last['gt'], gt)
    ):
      last['methods'].append(method)
    else:
      videos.append({'name': video, 'gt': gt, 'methods': [method]})
  return videos


def plot_timelines(
  path: str,
  rows: list,
  class_names,
  background: int,
  dpi: int = 100,
  top_k: int = 10,
) -> str:
  """Saves ``timeline_figure(...)`` as a PNG at ``path``; returns ``path``."""
  fig = timeline_figure(rows, class_names, background, dpi=dpi, top_k=top_k)
  fig.savefig(path, dpi=dpi)
  return path


def top_segments(segments, k):
  """The ``k`` highest-scoring segments in drawing order: ascending score,
  so the best one is drawn last, on top."""
  return sorted(segments, key=lambda s: float(s[3]))[-int(k) :] if k else []


def timeline_figure(
  rows: list,
  class_names,
  background: int,
  dpi: int = 100,
  top_k: int = 10,
):
  """Per video the ground truth once, then one row per method (a Figure).

  Args:
    rows: one dict per video: 'name', 'gt' ((T,) frame labels) and
      'methods', a list of dicts with 'name', 'pred' ((T,) frame labels or
      None) and optionally 'segments' (decoded ``(label, start, end,
      score)``, end exclusive). The older layout, one dict per row with
      'name', 'gt', 'pred' and 'segments' (and optionally 'video' and
      'method'), is accepted; consecutive rows with the same video name and
      ground truth share one ground-truth bar.
    class_names: names of the classes 0..K-1 (a background name, if
      present at index ``background``, is ignored).
    background: the background label (drawn grey).
    dpi: output resolution.
    top_k: a segments row shows the ``top_k`` highest-scoring segments (at
      least as many as the video has ground-truth segments), the best drawn
      on top, opaque, so every colour on it is a legend colour.

  Returns:
    The Matplotlib Figure (Agg canvas).
  """
  names = [str(n) for n in class_names]
  num_classes = max(len(names), background + 1)
  colors = class_colors(num_classes)
  many = num_classes - 1 > len(QUALITATIVE)
  videos = _normalise_rows(rows)

  blocks = []  # per video: (title, [(row label, segments, edge)], T)
  present = set()
  for video in videos:
    gt = video['gt']
    gt_segs = labels_to_segments(gt, background)
    bars = [('ground truth', gt_segs, False)]
    present |= _visible(gt_segs, gt.size)
    for method in video['methods']:
      label = method['name']
      if method.get('pred') is not None:
        segs = labels_to_segments(
          np.asarray(method['pred']).reshape(-1), background
        )
        present |= _visible(segs, gt.size)
        bars.append((f'{label}: frames', segs, False))
      segments = method.get('segments')
      if segments:
        k = max(int(top_k), len(gt_segs))
        best = top_segments(segments, k)
        # Only what stays visible: a covered segment's class is not shown.
        present |= _visible(best, gt.size)
        bars.append((f'{label}: top {len(best)} segments', best, True))
    blocks.append((video['name'], bars, max(gt.size, 1)))

  present.discard(background)
  shown = sorted(c for c in present if 0 <= c < num_classes)
  handles = [
    Patch(
      facecolor=colors[c],
      label=(f'{c} ' if many else '')
      + (names[c] if c < len(names) else str(c)),
    )
    for c in shown
  ]
  handles.append(Patch(facecolor=_BACKGROUND_COLOR, label='background'))
  per_col = 30
  ncol = max(1, math.ceil(len(handles) / per_col))
  legend_rows = math.ceil(len(handles) / ncol)

  num_bars = sum(len(b[1]) for b in blocks)
  bar_h = 0.32
  height = max(
    num_bars * bar_h + len(blocks) * 0.55 + 0.9, legend_rows * 0.17 + 0.8
  )
  longest = max(len(h.get_label()) for h in handles)
  legend_w = 0.3 + ncol * (0.9 + 0.05 * longest)
  width = 11.0 + legend_w
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  left, right = 2.5 / width, 1 - (legend_w + 0.1) / width
  top_pad, bottom_pad = 0.35 / height, 0.55 / height
  avail = 1 - top_pad - bottom_pad
  unit = avail / (num_bars + 1.1 * len(blocks))
  y = 1 - top_pad
  ax = None
  for i, (title, bars, num_frames) in enumerate(blocks):
    h = unit * len(bars)
    y -= 1.1 * unit * (i > 0) + h
    ax = fig.add_axes((left, y, right - left, h))
    for j, (_, segs, edge) in enumerate(bars):
      _draw_bar(
        ax,
        len(bars) - 1 - j,
        segs,
        num_frames,
        colors,
        numbers=many,
        edge=edge,
        # ~14 pixels: room for a 3-digit class id at font size 6.
        min_text_width=14 * num_frames / (dpi * width * (right - left)),
      )
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in reversed(bars)], fontsize=8)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_xlim(0, num_frames)
    ax.tick_params(axis='x', labelsize=7)
    ax.set_title(title, fontsize=9, loc='left', pad=2)
    for side in ('top', 'right'):
      ax.spines[side].set_visible(False)
  if ax is not None:
    ax.set_xlabel('frame', fontsize=8)
  fig.legend(
    handles=handles,
    loc='upper left',
    bbox_to_anchor=(right + 0.1 / width, 1 - top_pad),
    ncol=ncol,
    frameon=False,
    fontsize=7 if many else 8,
    handlelength=1.2,
    columnspacing=0.8,
    labelspacing=0.25,
  )
  return fig


# ---------------------------------------------------------------------------
# Skeleton animation.
# ---------------------------------------------------------------------------
_HEAD = 3
_FEET = (15, 19)
_PERSON_COLORS = ('#1f77b4', '#d62728', '#2ca02c', '#9467bd')


def _projection_axes(joints: np.ndarray, valid: np.ndarray):
  """Picks (horizontal, vertical, vertical_sign) for a front view.

  Args:
    joints: (T, M, V, 3) coordinates.
    valid: (T, M) bool, whether the person is present in the frame.

  Returns:
    Coordinate indices of the horizontal and vertical screen axes and +1/-1
    so that the head is drawn above the feet. The vertical axis is the one
    along the body (head to feet); the horizontal one is the first of the
    other two, i.e. x when y is up (NTU / PKU-MMD camera coordinates: x to
    the side, z the depth), so a front (x-y) view with persons side by side
    as they stand, never depth as the horizontal.
  """
  if not valid.any():
    return 0, 1, 1.0
  pts = joints[valid]  # (N, V, 3)
  head_to_feet = pts[:, _HEAD] - pts[:, list(_FEET)].mean(axis=1)
  vertical = int(np.argmax(np.abs(head_to_feet).mean(axis=0)))
  sign = 1.0 if head_to_feet[:, vertical].mean() >= 0 else -1.0
  horizontal = min(a for a in range(3) if a != vertical)
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
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_axes((0.02, 0.02, 0.96, 0.76 if title else 0.81))
  ax.set_xlim(centre[0] - half, centre[0] + half)
  ax.set_ylim(centre[1] - half, centre[1] + half)
  ax.set_aspect('equal', adjustable='box')
  ax.set_xticks([])
  ax.set_yticks([])
  # Animated artists are left out of the full draw below: the static figure
  # (axes, title) is rendered once and each frame only redraws the bones and
  # the caption on top of it (blitting; a full redraw per frame was most of
  # a demo GIF's cost).
  collections = []
  for m in range(num_persons):
    lc = LineCollection(
      [],
      colors=_PERSON_COLORS[m % len(_PERSON_COLORS)],
      linewidths=2.0,
      animated=True,
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
    animated=True,
  )
  canvas.draw()
  static = canvas.copy_from_bbox(fig.bbox)

  frames = []
  for t in range(0, num_frames, max(int(stride), 1)):
    canvas.restore_region(static)
    for m, lc in enumerate(collections):
      lc.set_segments(xy[t, m][bones] if valid[t, m] else [])
      ax.draw_artist(lc)
    # The frame counter also keeps consecutive GIF frames distinct, so Pillow
    # never merges identical frames and the GIF length is predictable.
    lines = [f'frame {t + 1}/{num_frames}']
    if labels is not None and t < labels.size:
      lines.append('GT:   ' + _label_name(labels[t], class_names, background))
    if pred is not None and t < pred.size:
      lines.append('pred: ' + _label_name(pred[t], class_names, background))
    caption.set_text('\n'.join(lines))
    fig.draw_artist(caption)
    frames.append(np.array(canvas.buffer_rgba())[..., :3])
  _write_gif(path, frames, fps, _PERSON_COLORS)
  return path


def _write_gif(path, frames, fps, colors):
  """Writes (H, W, 3) uint8 frames as a looping GIF with one palette.

  The palette is fitted once, to a sample of frames and a swatch of
  ``colors`` blended with white (so a person seen only in unsampled frames
  keeps its colour), and each frame is mapped to it without dithering.
  Per-frame adaptive palettes (what Matplotlib's PillowWriter leaves to
  Pillow) cost more than drawing the frames.
  """
  width = frames[0].shape[1]
  blends = [
    np.round(255 - a * (255 - 255 * np.asarray(mcolors.to_rgb(c))))
    for c in colors
    for a in np.linspace(0.25, 1.0, 4)
  ]
  swatch = np.repeat(
    np.repeat(np.asarray(blends, np.uint8)[:, None], width, axis=1), 4, axis=0
  )
  sample = np.concatenate(
    frames[:: max(len(frames) // 8, 1)] + [swatch], axis=0
  )
  palette = Image.fromarray(sample).quantize(
    colors=255, method=Image.Quantize.MEDIANCUT
  )
  images = [
    Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE)
    for f in frames
  ]
  images[0].save(
    path,
    save_all=True,
    append_images=images[1:],
    duration=int(1000 / fps),
    loop=0,
  )


def _row_normalised(confusion):
  c = np.asarray(confusion, np.float64)
  return c / np.maximum(c.sum(axis=1, keepdims=True), 1)


def top_confusions(confusion, class_names, top=15):
  """The ``top`` largest off-diagonal entries of the row-normalised frame
  confusion: [(true name, predicted name, share of true frames, frames)]."""
  c = np.asarray(confusion, np.int64)
  rows = _row_normalised(c)
  off = rows.copy()
  np.fill_diagonal(off, -1.0)
  order = np.argsort(-off, axis=None, kind='stable')
  out = []
  for flat in order[:top]:
    i, j = np.unravel_index(flat, off.shape)
    if off[i, j] <= 0:
      break
    out.append(
      (
        str(class_names[i]),
        str(class_names[j]),
        float(rows[i, j]),
        int(c[i, j]),
      )
    )
  return out


def confusion_text(
  confusion, class_names, max_classes=CONFUSION_TEXT_MAX_CLASSES, top=15
):
  """Row-normalised frame confusion (% of each true class) for the console:
  the whole matrix up to ``max_classes`` classes, else the ``top`` largest
  confusions (one line each) and the per-class recall range."""
  names = [str(n) for n in class_names]
  rows = _row_normalised(confusion) * 100
  if len(names) <= max_classes:
    short = [n[:6] for n in names]
    if len(set(short)) < len(short):  # ambiguous prefixes: number the classes
      short = [str(i) for i in range(len(names))]
      names = [f'{i:>2} {n}' for i, n in enumerate(names)]
    width = max(len(n) for n in names)
    lines = [' ' * width + ' ' + ' '.join(f'{s:>6}' for s in short)]
    seen = np.asarray(confusion).sum(axis=1) > 0
    for name, row, has in zip(names, rows, seen):
      cells = (f'{v:6.1f}' for v in row) if has else [f'{"-":>6}'] * len(row)
      lines.append(f'{name:<{width}} ' + ' '.join(cells))
    return '\n'.join(lines)
  pairs = top_confusions(confusion, names, top)
  recall = np.diag(rows)
  seen = np.asarray(confusion).sum(axis=1) > 0
  lines = [
    f'{len(names)} labels, largest confusions (true -> predicted, % of true '
    'frames); all in confusion.png:'
  ]
  width = min(max([len(t) for t, _, _, _ in pairs] + [1]), 28)
  for true, predicted, share, frames in pairs:
    lines.append(
      f'  {true[:28]:<{width}} -> {predicted[:28]:<28} {share * 100:5.1f}% '
      f'({frames} frames)'
    )
  if seen.any():
    worst = int(np.flatnonzero(seen)[np.argmin(recall[seen])])
    lines.append(
      f'  per-class frame recall: mean {recall[seen].mean():.1f}%, lowest '
      f'{recall[worst]:.1f}% ({names[worst][:28]})'
    )
  return '\n'.join(lines)


def plot_confusion(path, confusion, class_names, dpi=100):
  """Saves ``confusion_figure(...)`` as a PNG at ``path``; returns ``path``."""
  fig = confusion_figure(confusion, class_names)
  fig.savefig(path, dpi=dpi)
  return path


def confusion_figure(confusion, class_names):
  """Heat map of the row-normalised frame confusion matrix (a Figure).

  Legible from 2 to 120+ classes: the figure grows with the classes up to
  16 inches, per-cell values are written up to ``CONFUSION_CELL_TEXT_MAX``
  classes, and tick labels are thinned to at most ~60 per axis.
  """
  rows = _row_normalised(confusion)
  names = [str(n) for n in class_names]
  k = len(names)
  side = min(2.5 + 0.42 * k, 16.0)
  fig = Figure(figsize=(side + 1.6, side + 0.6))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  # Classes with no true frames are grey, not 'never predicted right'.
  shown = np.where(
    np.asarray(confusion).sum(axis=1, keepdims=True) > 0, rows, np.nan
  )
  cmap = colormaps['viridis'].with_extremes(bad='#d9d9d9')
  im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation='nearest')
  every = max(1, math.ceil(k / 60))
  ticks = list(range(0, k, every))
  if k - 1 not in ticks:
    ticks.append(k - 1)  # the background row/column is always named
  fontsize = 8 if k <= 20 else (6 if k <= 60 else 5)
  label = [names[i][:24] for i in ticks]
  ax.set_xticks(ticks, label, rotation=90, fontsize=fontsize)
  ax.set_yticks(ticks, label, fontsize=fontsize)
  ax.set_xlabel('predicted frame label')
  ax.set_ylabel('true frame label')
  ax.set_title(
    f'frame confusion, row-normalised ({k} labels'
    + (f', 1 in {every} named' if every > 1 else '')
    + '; grey: no true frames'
    + ')',
    fontsize=9,
  )
  if k <= CONFUSION_CELL_TEXT_MAX:
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
            color='black' if rows[i, j] > 0.6 else 'white',
          )
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  return fig
