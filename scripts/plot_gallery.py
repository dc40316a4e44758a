r"""Writes every result plot for fixture label sets of 4, 11, 52 and 120 classes.

  python scripts/plot_gallery.py --out=/tmp/plot_gallery [--classes=4,11,52,120]

Labels are random (a seeded fixture, no model): ground truth of alternating
background and action segments, two "methods" whose frame predictions are
the ground truth with shifted boundaries and some wrong labels, and decoded
segments with scores. Per class count it writes ``timelines_K.png``,
``confusion_K.png``, ``confusion_K.txt`` (what the console shows) and, for
the first, ``skeleton.gif``; look at them after changing skel_jax.plotting.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skel_jax import plotting  # noqa: E402

# Fixture shapes: classes -> (videos, frames per video, actions per video).
SHAPES = {4: (3, 400, 4), 11: (3, 320, 5), 52: (3, 3000, 20), 120: (3, 300, 3)}


def fixture(num_classes, seed=0):
  """(class_names, videos, confusion) of random labels; background is K."""
  rng = np.random.default_rng(seed)
  n_videos, frames, actions = SHAPES.get(num_classes, (3, 400, 5))
  bg = num_classes
  names = [f'action_{c:03d}' for c in range(num_classes)] + ['background']
  videos = []
  confusion = np.zeros((num_classes + 1, num_classes + 1), np.int64)
  for v in range(n_videos):
    gt = np.full(frames, bg)
    cuts = np.sort(rng.choice(np.arange(1, frames), 2 * actions, replace=False))
    for s, e in zip(cuts[::2], cuts[1::2]):
      gt[s:e] = rng.integers(num_classes)
    methods = []
    for m, (name, noise) in enumerate(
      (('snippet_moco', 0.1), ('video_moco', 0.3))
    ):
      pred = np.roll(gt, rng.integers(-8, 9))
      wrong = rng.random(frames) < noise
      pred[wrong] = rng.integers(num_classes + 1, size=wrong.sum())
      # Decoded segments: the GT's with jittered ends and random scores,
      # plus low-scoring false alarms overlapping them.
      segments = []
      for label, s, e in plotting.labels_to_segments(gt, bg):
        j = rng.integers(-5, 6, size=2)
        segments.append(
          (label, max(0, s + j[0]), min(frames, e + j[1]), rng.uniform(0.5, 1))
        )
      for _ in range(3 * actions):
        s = int(rng.integers(frames - 10))
        e = int(min(frames, s + rng.integers(10, frames // 4)))
        segments.append(
          (int(rng.integers(num_classes)), s, e, rng.uniform(0, 0.5))
        )
      methods.append({'name': name, 'pred': pred, 'segments': segments})
      if m == 0:
        np.add.at(confusion, (gt, pred), 1)
    videos.append({'name': f'video_{v}', 'gt': gt, 'methods': methods})
  return names, videos, confusion


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='/tmp/plot_gallery')
  parser.add_argument('--classes', default='4,11,52,120')
  parser.add_argument('--no_gif', action='store_true')
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  written = []
  for k in [int(x) for x in args.classes.split(',')]:
    names, videos, confusion = fixture(k)
    written.append(
      plotting.plot_timelines(
        os.path.join(args.out, f'timelines_{k}.png'), videos, names, k
      )
    )
    written.append(
      plotting.plot_confusion(
        os.path.join(args.out, f'confusion_{k}.png'), confusion, names
      )
    )
    path = os.path.join(args.out, f'confusion_{k}.txt')
    with open(path, 'w') as f:
      f.write(plotting.confusion_text(confusion, names) + '\n')
    written.append(path)
  if not args.no_gif:
    written.append(write_gif(os.path.join(args.out, 'skeleton.gif')))
  print('\n'.join(written))


# A standing NTU-25 pose (x = right, y = up, z = depth), metres.
_POSE = np.array(
  [
    [0.0, 1.0, 0], [0.0, 1.25, 0], [0.0, 1.5, 0], [0.0, 1.65, 0],
    [-0.2, 1.45, 0], [-0.3, 1.2, 0], [-0.35, 0.95, 0], [-0.36, 0.9, 0],
    [0.2, 1.45, 0], [0.3, 1.2, 0], [0.35, 0.95, 0], [0.36, 0.9, 0],
    [-0.1, 0.95, 0], [-0.12, 0.5, 0], [-0.12, 0.08, 0], [-0.12, 0.0, 0.1],
    [0.1, 0.95, 0], [0.12, 0.5, 0], [0.12, 0.08, 0], [0.12, 0.0, 0.1],
    [0.0, 1.45, 0], [-0.37, 0.85, 0], [-0.33, 0.9, 0.03], [0.37, 0.85, 0],
    [0.33, 0.9, 0.03],
  ],
  np.float32,
)  # fmt: skip


def write_gif(path, frames=40):
  """Two persons 1 m apart at 3 m depth, arms reaching towards the camera."""
  t = np.arange(frames, dtype=np.float32)
  seq = np.zeros((frames, 2, 25, 3), np.float32)
  for m, x in enumerate((-0.5, 0.5)):
    seq[:, m] = _POSE
    reach = 0.6 * (0.5 + 0.5 * np.sin(t / 4 + m))[:, None]
    seq[:, m, [6, 7, 10, 11, 21, 22, 23, 24], 2] -= reach  # hands forward
    seq[:, m, ..., 0] += x
    seq[:, m, ..., 2] += 3.0
  labels = np.array([2] * 10 + [0] * 20 + [2] * 10)
  pred = np.array([2] * 12 + [0] * 14 + [1] * 6 + [2] * 8)
  return plotting.animate_skeleton(
    path, seq, labels, pred, ['punch', 'push', 'background'], stride=2,
    title='fixture: two persons',
  )  # fmt: skip


if __name__ == '__main__':
  main()
