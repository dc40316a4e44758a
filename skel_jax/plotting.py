"""Timeline plots of ground-truth vs. predicted frame labels.

Uses the object-oriented Matplotlib API with the Agg canvas, so it never
touches pyplot's global backend state and works on headless machines.
"""
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from skel_jax.postprocess import labels_to_segments

_BACKGROUND_COLOR = '#e6e6e6'


def _class_colors(num_classes: int) -> list:
  cmap = colormaps['tab10' if num_classes <= 10 else 'tab20']
  return [cmap(i % cmap.N) for i in range(num_classes)]


def _draw_bar(ax, y, segments, num_frames, colors, height=0.8, alphas=None):
  """One horizontal bar: grey background, a coloured span per segment."""
  ax.broken_barh([(0, num_frames)], (y - height / 2, height),
                 facecolors=_BACKGROUND_COLOR)
  for i, seg in enumerate(segments):
    label, start, end = int(seg[0]), seg[1], seg[2]
    alpha = 1.0 if alphas is None else alphas[i]
    ax.broken_barh([(start, end - start)], (y - height / 2, height),
                   facecolors=colors[label % len(colors)], alpha=alpha)


def plot_timelines(path: str, rows: list, class_names, background: int,
                   dpi: int = 100) -> str:
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
    bars.append((f'{row["name"]} GT', labels_to_segments(gt, background),
                 num_frames, None))
    if row.get('pred') is not None:
      pred = np.asarray(row['pred']).reshape(-1)
      bars.append((f'{row["name"]} pred',
                   labels_to_segments(pred, background), num_frames, None))
    segments = row.get('segments')
    if segments:
      scores = np.asarray([s[3] for s in segments], np.float64)
      ranks = np.argsort(np.argsort(scores))  # 0 = lowest score
      alphas = 0.35 + 0.65 * (ranks + 1) / len(scores)
      bars.append((f'{row["name"]} segments', list(segments), num_frames,
                   alphas))

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
  handles = [Patch(facecolor=colors[c],
                   label=names[c] if c < len(names) else str(c))
             for c in range(num_classes) if c != background]
  handles.append(Patch(facecolor=_BACKGROUND_COLOR, label='background'))
  ax.legend(handles=handles, loc='upper center', bbox_to_anchor=(0.5, -0.18),
            ncol=min(len(handles), 6), frameon=False, fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  return path
