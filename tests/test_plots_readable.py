"""Result plots stay readable from 4 to 120 classes (issue 13).

Timelines: the ground truth once per video, one row per method, a legend of
the classes present, the top-k segments with the best on top, colours that
can be told apart. Confusion: a heat map without per-cell text at many
classes, a console list of the largest confusions above 12 classes. Skeleton
GIF: a front (x-y) view.
"""

import numpy as np
import pytest

from skel_jax import plotting


def _video(num_classes, frames, rng, actions=4):
  gt = np.full(frames, num_classes)
  cuts = np.sort(rng.choice(np.arange(1, frames), 2 * actions, replace=False))
  for s, e in zip(cuts[::2], cuts[1::2]):
    gt[s:e] = rng.integers(num_classes)
  return gt


@pytest.mark.parametrize(
  'num_classes,min_delta_e', [(4, 35.0), (11, 25.0), (52, 20.0), (120, 15.0)]
)
def test_palette_colours_are_apart(num_classes, min_delta_e):
  colors = plotting.class_colors(num_classes)
  assert len(set(colors)) == num_classes
  assert plotting.min_color_distance(colors) >= min_delta_e
  # Every class also stands out from the grey background bar.
  assert (
    plotting.min_color_distance(colors + [plotting._BACKGROUND_COLOR])
    >= min_delta_e
  )


def _tick_labels(fig):
  return [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]


def test_timeline_ground_truth_once_per_video_and_one_row_per_method():
  rng = np.random.default_rng(0)
  gt = _video(4, 200, rng)
  methods = [
    {'name': 'snippet', 'pred': gt, 'segments': [(0, 10, 50, 0.9)]},
    {'name': 'video', 'pred': np.roll(gt, 5)},
  ]
  fig = plotting.timeline_figure(
    [{'name': 'v0', 'gt': gt, 'methods': methods}] * 2,
    ['a', 'b', 'c', 'd', 'background'],
    background=4,
  )
  labels = _tick_labels(fig)
  assert labels.count('ground truth') == 2
  assert sum(lab.startswith('snippet: frames') for lab in labels) == 2
  assert sum(lab.startswith('video: frames') for lab in labels) == 2
  # The older layout (one dict per video x method, the same GT repeated, as
  # the demo used to pass) also shows the GT once.
  old = [
    {'name': 'v0', 'gt': gt, 'pred': gt, 'method': 'snippet'},
    {'name': 'v0', 'gt': gt, 'pred': gt, 'method': 'video'},
  ]
  fig = plotting.timeline_figure(old, ['a', 'b', 'c', 'd'], background=4)
  assert _tick_labels(fig).count('ground truth') == 1


def _legend_labels(fig):
  return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


@pytest.mark.parametrize('num_classes', [52, 120])
def test_timeline_legend_lists_only_present_classes(num_classes):
  rng = np.random.default_rng(1)
  names = [f'class_{c}' for c in range(num_classes)] + ['background']
  gt = np.full(3000, num_classes)
  gt[100:400], gt[900:1500] = 7, 30
  pred = gt.copy()
  pred[1500:1600] = 41
  fig = plotting.timeline_figure(
    [{'name': 'v', 'gt': gt, 'methods': [{'name': 'm', 'pred': pred}]}],
    names,
    background=num_classes,
  )
  assert _legend_labels(fig) == [
    '7 class_7',
    '30 class_30',
    '41 class_41',
    'background',
  ]
  # Each bar stays a bar, not a thin strip (the legend sits at the side).
  ax = fig.axes[0]
  bar_inches = ax.get_position().height * fig.get_size_inches()[1] / 2
  assert bar_inches >= 0.25
  del rng


def test_timeline_height_bounded_with_120_classes_present():
  rng = np.random.default_rng(2)
  names = [f'class_{c}' for c in range(120)] + ['background']
  pred = rng.integers(121, size=3000)  # every class present
  gt = _video(120, 3000, rng)
  fig = plotting.timeline_figure(
    [{'name': 'v', 'gt': gt, 'methods': [{'name': 'm', 'pred': pred}]}],
    names,
    background=120,
  )
  width, height = fig.get_size_inches()
  assert len(_legend_labels(fig)) == 121
  assert height <= 7 and width <= 20


def test_top_segments_best_drawn_last():
  segments = [
    (c, 10 * c, 10 * c + 50, s) for c, s in enumerate([0.2, 0.9, 0.5, 0.1])
  ]
  drawn = plotting.top_segments(segments, 3)
  assert [s[3] for s in drawn] == [0.2, 0.5, 0.9]  # best on top
  rng = np.random.default_rng(3)
  gt = _video(4, 200, rng)
  many = [(0, 0, 100, 0.1 + 0.001 * i) for i in range(30)] + [(1, 0, 100, 0.95)]
  fig = plotting.timeline_figure(
    [
      {
        'name': 'v',
        'gt': gt,
        'methods': [{'name': 'm', 'pred': None, 'segments': many}],
      }
    ],
    ['a', 'b', 'c', 'd'],
    background=4,
    top_k=5,
  )
  assert 'm: top 5 segments' in _tick_labels(fig)


def test_legend_leaves_out_classes_of_covered_segments():
  gt = np.array([4] * 10 + [0] * 30 + [4] * 10)
  segments = [(2, 10, 30, 0.1), (0, 5, 45, 0.9)]  # class 2 wholly covered
  fig = plotting.timeline_figure(
    [
      {
        'name': 'v',
        'gt': gt,
        'methods': [{'name': 'm', 'pred': None, 'segments': segments}],
      }
    ],
    ['a', 'b', 'c', 'd', 'background'],
    background=4,
  )
  assert _legend_labels(fig) == ['a', 'background']


def test_confusion_text_lists_largest_confusions_above_12_classes():
  k = 52
  names = [f'a_much_longer_class_name_{c}' for c in range(k)] + ['background']
  c = np.diag(np.full(k + 1, 100))
  c[3, 7] = 60  # the largest confusion
  c[10, k] = 30
  text = plotting.confusion_text(c, names)
  lines = text.splitlines()
  assert len(lines) <= 18 and max(len(line) for line in lines) <= 130
  assert 'a_much_longer_class_name_3' in lines[1]
  assert 'a_much_longer_class_name_7' in lines[1]
  # Small label sets keep the whole matrix.
  small = plotting.confusion_text(np.diag([1, 0, 1, 1, 1]), list('abcde'))
  assert len(small.splitlines()) == 6
  # A class without true frames reads '-', not 0.0 (never recognised).
  assert small.splitlines()[2].split()[1:] == ['-'] * 5


def test_confusion_heat_map_at_120_classes(tmp_path):
  from PIL import Image

  k = 121
  c = np.diag(np.arange(1, k + 1))
  path = plotting.plot_confusion(
    str(tmp_path / 'c.png'), c, [f'class_{i}' for i in range(k)]
  )
  with Image.open(path) as im:
    w, h = im.size
  assert w <= 1800 and h <= 1800
  fig = plotting.confusion_figure(c, [f'class_{i}' for i in range(k)])
  ax = fig.axes[0]
  assert not ax.texts  # no per-cell numbers
  assert len(ax.get_xticks()) <= 62
  assert ax.get_yticklabels()[-1].get_text() == 'class_120'


def test_gif_front_view_ignores_depth_even_when_it_spreads_more():
  """Arms reaching to the camera spread the body most along depth (z); the
  view stays x-y, so a second person 1 m aside is drawn beside the first."""
  t = 30
  joints = np.zeros((t, 2, 25, 3), np.float32)
  rng = np.random.default_rng(0)
  for m, x in enumerate((-0.5, 0.5)):
    joints[:, m, :, 1] = np.linspace(0, 1.7, 25)  # height along y
    joints[:, m, 3, 1] = 1.7  # head on top
    joints[:, m, [15, 19], 1] = 0.0  # feet at the bottom
    joints[:, m, :, 0] = x + 0.05 * rng.standard_normal(25)
    joints[:, m, :, 2] = 3.0 + 0.6 * rng.standard_normal(25)  # depth spread
  valid = np.ones((t, 2), bool)
  horizontal, vertical, sign = plotting._projection_axes(joints, valid)
  assert (horizontal, vertical, sign) == (0, 1, 1.0)
