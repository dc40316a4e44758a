"""Skeleton GIFs (skel_jax.plotting.animate_skeleton) and TensorBoard logging."""

import glob
import os
import struct
import warnings

import numpy as np
import pytest
from matplotlib import _pylab_helpers
from PIL import Image

from skel_jax import plotting
from skel_jax import tensorboard

# A standing NTU-25 pose, (x = right, y = up, z = depth) in metres.
_POSE = np.array(
  [
    [0.0, 1.0, 0],
    [0.0, 1.25, 0],
    [0.0, 1.5, 0],
    [0.0, 1.65, 0],  # 0-3
    [-0.2, 1.45, 0],
    [-0.3, 1.2, 0],
    [-0.35, 0.95, 0],
    [-0.36, 0.9, 0],  # 4-7
    [0.2, 1.45, 0],
    [0.3, 1.2, 0],
    [0.35, 0.95, 0],
    [0.36, 0.9, 0],  # 8-11
    [-0.1, 0.95, 0],
    [-0.12, 0.5, 0],
    [-0.12, 0.08, 0],
    [-0.12, 0.0, 0.1],
    [0.1, 0.95, 0],
    [0.12, 0.5, 0],
    [0.12, 0.08, 0],
    [0.12, 0.0, 0.1],  # 16-19
    [0.0, 1.45, 0],
    [-0.37, 0.85, 0],
    [-0.33, 0.9, 0.03],  # 20-22
    [0.37, 0.85, 0],
    [0.33, 0.9, 0.03],  # 23-24
  ],
  np.float32,
)


def _sequence(num_frames, num_persons=1, up_axis=1):
  """(T, M, 25, 3): a person waving the right hand; others all-zero."""
  t = np.arange(num_frames, dtype=np.float32)[:, None]
  seq = np.repeat(_POSE[None], num_frames, axis=0)
  seq[:, 10:12, 1] += 0.5 + 0.1 * np.sin(t / 3)  # right wrist/hand raised
  seq[:, 23:25, 1] += 0.5 + 0.1 * np.sin(t / 3)
  seq[..., 0] += 0.01 * t  # slow drift sideways
  if up_axis != 1:  # rotate so that `up_axis` is vertical
    order = {2: [0, 2, 1], 0: [1, 0, 2]}[up_axis]
    seq = seq[..., order]
  out = np.zeros((num_frames, num_persons, 25, 3), np.float32)
  out[:, 0] = seq
  return out


def _n_frames(path):
  with Image.open(path) as im:
    return im.n_frames


@pytest.mark.parametrize('num_persons', [1, 2])
def test_gif_frame_count(tmp_path, num_persons):
  path = str(tmp_path / 'a.gif')
  labels = np.array([10] * 10 + [3] * 20 + [10] * 7)
  pred = np.roll(labels, 2)
  names = [f'c{i}' for i in range(10)]
  out = plotting.animate_skeleton(
    path,
    _sequence(37, num_persons),
    labels,
    pred,
    names,
    fps=10,
    stride=2,
    title='x',
  )
  assert out == path
  assert _n_frames(path) == 19  # ceil(37 / 2)
  # The OO API must not leave figures registered with pyplot.
  assert _pylab_helpers.Gcf.get_num_fig_managers() == 0


def test_gif_without_labels(tmp_path):
  path = str(tmp_path / 'b.gif')
  seq = _sequence(12, 2)
  seq[6:, 0] = 0  # the person leaves: nothing to draw in those frames
  plotting.animate_skeleton(path, seq, stride=3)
  assert _n_frames(path) == 4
  plotting.animate_skeleton(path, seq, labels=np.zeros(12, int), stride=1)
  assert _n_frames(path) == 12


def test_gif_keeps_a_colour_seen_in_few_frames(tmp_path):
  # GIFs share one palette; a second person (red) present in two frames,
  # neither of them among the frames the palette is fitted to, keeps its red.
  path = str(tmp_path / 'd.gif')
  seq = _sequence(37, 2)
  seq[1:3, 1] = seq[1:3, 0] + np.float32([0.6, 0.0, 0.0])
  plotting.animate_skeleton(path, seq, stride=1)
  red = np.array([0xD6, 0x27, 0x28])
  with Image.open(path) as im:
    im.seek(1)
    rgb = np.asarray(im.convert('RGB'), int).reshape(-1, 3)
  assert np.abs(rgb - red).max(axis=1).min() <= 8


def test_gif_all_absent(tmp_path):
  path = str(tmp_path / 'c.gif')
  plotting.animate_skeleton(path, np.zeros((4, 2, 25, 3)), stride=1)
  assert _n_frames(path) == 4


@pytest.mark.parametrize('up_axis', [0, 1, 2])
def test_projection_finds_vertical(up_axis):
  seq = _sequence(20, 1, up_axis)
  valid = np.ones(seq.shape[:2], bool)
  horizontal, vertical, sign = plotting._projection_axes(seq, valid)
  assert vertical == up_axis and sign == 1.0
  # The shoulder/arm span (original x) is the better horizontal than depth.
  assert horizontal == {0: 1, 1: 0, 2: 0}[up_axis]
  # Upside-down input is flipped back.
  seq[..., up_axis] *= -1
  assert plotting._projection_axes(seq, valid)[1:] == (up_axis, -1.0)


def test_label_names():
  names = ['walk', 'wave', 'background']
  assert plotting._label_name(2, names, 2) == 'background'
  assert plotting._label_name(1, names, 2) == 'wave'
  assert plotting._label_name(7, None, None) == '7'


# ---------------------------------------------------------------------------
# TensorBoard.
# ---------------------------------------------------------------------------
def _read_events(path):
  """Decodes a TFRecord event file with tensorboardX's Event proto."""
  from tensorboardX.proto import event_pb2

  events = []
  with open(path, 'rb') as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    # TFRecord framing: u64 length, u32 crc, payload, u32 crc.
    (length,) = struct.unpack('<Q', data[pos : pos + 8])
    payload = data[pos + 12 : pos + 12 + length]
    pos += 12 + length + 4
    events.append(event_pb2.Event.FromString(payload))
  return events


def _scalars(logdir):
  """{tag: [(step, value)]} over all event files, via TensorBoard if present."""
  files = sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*')))
  assert files and all(os.path.getsize(f) > 0 for f in files)
  try:
    from tensorboard.backend.event_processing import event_accumulator
  except ImportError:
    out = {}
    for path in files:
      for ev in _read_events(path):
        for v in ev.summary.value:
          if v.HasField('simple_value'):
            out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out
  acc = event_accumulator.EventAccumulator(logdir)
  acc.Reload()
  return {
    tag: [(e.step, e.value) for e in acc.Scalars(tag)]
    for tag in acc.Tags()['scalars']
  }


def test_scalar_writer_roundtrip(tmp_path):
  pytest.importorskip('tensorboardX')
  logdir = str(tmp_path / 'tb')
  with tensorboard.ScalarWriter(logdir) as tb:
    assert tb.enabled
    tb.scalars(
      1,
      {
        'loss': 2.5,
        'lr': np.float32(0.1),
        'note': 'x',
        'acc': np.array(0.5),
        'vec': np.zeros(3),
        'flag': True,
      },
    )
    tb.scalars(2, {'loss': 1.25})
    tb.flush()
    # flush() alone must put every record on disk (tensorboardX's does not).
    got = _scalars(logdir)
    assert set(got) == {'loss', 'lr', 'acc'}
    assert got['loss'] == [(1, 2.5), (2, 1.25)]
    assert got['lr'][0][0] == 1 and got['lr'][0][1] == pytest.approx(0.1)
    tb.scalars(3, {'loss': 0.5})
    tb.text(3, 'results', '| a | b |\n|---|---|\n| 1 | 2 |')
  assert not tb.enabled
  assert _scalars(logdir)['loss'] == [(1, 2.5), (2, 1.25), (3, 0.5)]
  # A second writer on the same logdir within the same second must not
  # overwrite the first one's file.
  with tensorboard.ScalarWriter(logdir) as tb:
    tb.scalars(4, {'loss': 0.25})
  assert [s for s, _ in _scalars(logdir)['loss']] == [1, 2, 3, 4]


def test_scalar_writer_without_tensorboardx(tmp_path, monkeypatch):
  monkeypatch.setattr(tensorboard, '_SummaryWriter', None)
  monkeypatch.setattr(tensorboard, '_warned', False)
  logdir = tmp_path / 'tb'
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    for _ in range(2):
      with tensorboard.ScalarWriter(str(logdir)) as tb:
        assert not tb.enabled
        tb.scalars(0, {'loss': 1.0})
        tb.text(0, 't', 'x')
        tb.flush()
  assert len([w for w in caught if 'tensorboardX' in str(w.message)]) == 1
  assert not logdir.exists()
