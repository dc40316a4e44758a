"""Writers for a tiny BABEL release: BABEL json files in the release schema,
AMASS-style npz files, and a synthetic SMPL-H-like model file.

The model has the real SMPL-H keys, kinematic tree and array layouts
(v_template (V, 3), J_regressor (52, V), kintree_table (2, 52) with 2**32 - 1
as the root's parent, weights (V, 52), posedirs (V, 3, 459), hands_mean{l,r}
(45,), ...), but only a few hundred vertices of random valid content, so it
also carries ``smplh.VERTEX_IDS_KEY``: the 21 vertex-joint ids inside the
small mesh (each placed on the joint the real vertex belongs to).
"""

import json
import os
import pickle
import sys
import types
import uuid

import numpy as np

from data_builders.babel import smplh

NUM_LAYERS = 5  # vertices per joint
NUM_VERTICES = smplh.NUM_JOINTS * NUM_LAYERS  # 260

# Joint each vertex joint rides on (smplx VertexJointSelector order) and the
# vertex layer used for it (distinct per joint so ids never collide).
_VERTEX_JOINT_HOMES = (
  (15, 1),
  (15, 2),
  (15, 3),
  (15, 4),
  (15, 0),  # nose, eyes, ears: head
  (10, 1),
  (10, 2),
  (7, 1),
  (11, 1),
  (11, 2),
  (8, 1),  # toes, heels
  (36, 1),
  (24, 1),
  (27, 1),
  (33, 1),
  (30, 1),  # left thumb..pinky tips
  (51, 1),
  (39, 1),
  (42, 1),
  (48, 1),
  (45, 1),  # right thumb..pinky tips
)
VERTEX_IDS = tuple(
  layer * smplh.NUM_JOINTS + j for j, layer in _VERTEX_JOINT_HOMES
)


def model_arrays(seed=0, num_layers=NUM_LAYERS, vertex_ids=True):
  """Random but valid SMPL-H-like model arrays (dict as in the model files).

  Vertex v belongs to joint v % 52. Joints sit at random offsets from their
  parents; each joint's vertices scatter around it and the J_regressor row
  averages them; skinning weights are 0.7 own joint + 0.3 its parent (root:
  1.0); pose blend shapes and mean hand poses are small random values.
  """
  rng = np.random.default_rng(seed)
  nj = smplh.NUM_JOINTS
  nv = nj * num_layers
  joints = np.zeros((nj, 3))
  for k in range(1, nj):
    joints[k] = joints[smplh.PARENTS[k]] + rng.uniform(-0.2, 0.2, 3)
  home = np.arange(nv) % nj
  v_template = joints[home] + rng.normal(0.0, 0.03, (nv, 3))
  regressor = np.zeros((nj, nv))
  regressor[home, np.arange(nv)] = 1.0 / num_layers
  weights = np.zeros((nv, nj))
  for v, j in enumerate(home):
    if j == 0:
      weights[v, 0] = 1.0
    else:
      weights[v, j], weights[v, smplh.PARENTS[j]] = 0.7, 0.3
  kintree = np.stack(
    [np.array(smplh.PARENTS, np.int64), np.arange(nj, dtype=np.int64)]
  )
  kintree[0, 0] = 2**32 - 1
  arrays = {
    'v_template': v_template,
    'f': rng.integers(0, nv, (2 * nv, 3)).astype(np.uint32),
    'J_regressor': regressor,
    'J': regressor @ v_template,
    'kintree_table': kintree,
    'weights': weights,
    'posedirs': rng.normal(0.0, 0.01, (nv, 3, smplh.NUM_POSE_BASIS)),
    'shapedirs': rng.normal(0.0, 0.01, (nv, 3, 10)),
    'hands_componentsl': np.eye(45),
    'hands_componentsr': np.eye(45),
    'hands_meanl': rng.normal(0.0, 0.15, 45),
    'hands_meanr': rng.normal(0.0, 0.15, 45),
    'bs_style': 'lbs',
    'bs_type': 'lrotmin',
  }
  if vertex_ids:
    arrays[smplh.VERTEX_IDS_KEY] = np.array(VERTEX_IDS, np.int64)
  return arrays


def write_model(path, arrays=None, *, sparse_regressor=False):
  """Writes ``arrays`` as an smplx-style .pkl or an .npz (by extension)."""
  arrays = dict(model_arrays() if arrays is None else arrays)
  if sparse_regressor:  # as in the MANO-merged pickles
    import scipy.sparse  # pylint: disable=g-import-not-at-top

    arrays['J_regressor'] = scipy.sparse.csc_matrix(arrays['J_regressor'])
  os.makedirs(os.path.dirname(os.fspath(path)) or '.', exist_ok=True)
  if os.fspath(path).endswith('.npz'):
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
  else:
    with open(path, 'wb') as f:
      pickle.dump(arrays, f, protocol=2)
  return path


class _FakeCh:
  """Pickles as ``chumpy.ch.Ch`` (what the original MANO/SMPL-H files hold)."""

  def __init__(self, x):
    self.x = x


def write_chumpy_pickle(path, arrays=None, chumpy_keys=('shapedirs',)):
  """A model pickle whose ``chumpy_keys`` are chumpy objects (no chumpy
  needed: a stand-in module is registered only while pickling)."""
  arrays = dict(model_arrays() if arrays is None else arrays)
  for key in chumpy_keys:
    arrays[key] = _FakeCh(np.asarray(arrays[key]))
  modules = {
    'chumpy': types.ModuleType('chumpy'),
    'chumpy.ch': types.ModuleType('chumpy.ch'),
  }
  _FakeCh.__module__, _FakeCh.__qualname__ = 'chumpy.ch', 'Ch'
  modules['chumpy.ch'].Ch = _FakeCh
  saved = {k: sys.modules.get(k) for k in modules}
  sys.modules.update(modules)
  try:
    with open(path, 'wb') as f:
      pickle.dump(arrays, f, protocol=2)
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k)
      else:
        sys.modules[k] = v
    _FakeCh.__module__, _FakeCh.__qualname__ = __name__, '_FakeCh'
  return path


def random_poses(num_frames, seed=0, scale=0.3):
  """Smooth-ish random SMPL-H poses (T, 156)."""
  rng = np.random.default_rng(seed)
  base = rng.normal(0.0, scale, (1, smplh.POSE_WIDTH))
  drift = np.cumsum(
    rng.normal(0.0, 0.02, (num_frames, smplh.POSE_WIDTH)), axis=0
  )
  return base + drift


def write_amass(path, poses, fps, *, drop=(), **overrides):
  """Writes an AMASS SMPL+H "G" npz (keys: docs/data_and_eval.md §3.2)."""
  t = len(poses)
  arrays = {
    'poses': np.asarray(poses),
    'trans': np.zeros((t, 3)),
    'betas': np.zeros(16),
    'dmpls': np.zeros((t, 8)),
    'gender': np.array('male'),
    'mocap_framerate': np.array(fps),
  }
  arrays.update(overrides)
  for key in drop:
    arrays.pop(key)
  os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
  np.savez(path, **arrays)
  return path


def entry(sid, feat_p, dur, segments, *, frame_ann=True):
  """One BABEL release entry; segments = [(act_cat list|None, start, end)]."""
  labels = [
    {
      'seg_id': str(uuid.UUID(int=sid * 1000 + i)),
      'raw_label': ' '.join(cats or ['?']),
      'proc_label': ' '.join(cats or ['?']),
      'act_cat': cats,
      'start_t': start,
      'end_t': end,
    }
    for i, (cats, start, end) in enumerate(segments)
  ]
  ann = {
    'babel_lid': str(uuid.UUID(int=sid)),
    'anntr_id': 'a' * 32,
    'mul_act': len(segments) > 1,
    'labels': labels,
  }
  seq_ann = {
    'babel_lid': str(uuid.UUID(int=sid + 7)),
    'anntr_id': 'b' * 32,
    'mul_act': False,
    'labels': [
      {
        'seg_id': str(uuid.UUID(int=sid + 9)),
        'raw_label': 'x',
        'proc_label': 'x',
        'act_cat': ['walk'],
      }
    ],
  }
  return {
    'babel_sid': sid,
    'url': f'https://example.org/babel-renders/{sid:06d}.mp4',
    'feat_p': feat_p,
    'dur': dur,
    'seq_ann': seq_ann,
    'frame_ann': ann if frame_ann else None,
  }


def write_release(root, split, entries, *, subdir='babel_v1.0_release'):
  """Writes ``root/subdir/<split>.json`` keyed by str(babel_sid)."""
  folder = os.path.join(root, subdir)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f'{split}.json')
  with open(path, 'w') as f:
    json.dump({str(e['babel_sid']): e for e in entries}, f)
  return path


def make_tiny_release(root):
  """A small release exercising path mappings, frame rates and bad inputs.

  Returns:
    {sid: dict(poses=..., fps=..., entry=...)} of every written sequence.
  """
  amass_root = os.path.join(root, 'amass')
  seqs = {}

  def add(
    split,
    sid,
    feat_p,
    stored,
    fps,
    dur,
    segments,
    *,
    poses=None,
    frame_ann=True,
    **npz,
  ):
    if poses is None:
      poses = random_poses(int(round(fps * dur)), seed=sid)
    if stored is not None:
      write_amass(os.path.join(amass_root, stored), poses, fps, **npz)
    e = entry(sid, feat_p, dur, segments, frame_ann=frame_ann)
    seqs[sid] = dict(split=split, poses=poses, fps=fps, entry=e)

  # train: the first three convert for subset1 (literal path, BMLrub mapping,
  # first component dropped), then protocol drops and bad files.
  add(
    'train',
    1,
    'CMU/CMU/01/01_01_poses.npz',
    'CMU/CMU/01/01_01_poses.npz',
    120.0,
    4.0,
    [
      (['walk'], 0.0, 2.0),
      (['turn', 'hand movements'], 1.5, 3.0),
      (['stand'], 2.5, 4.1),
    ],
  )
  add(
    'train',
    2,
    'BMLrub/BioMotionLab_NTroje/rub001/0001_poses.npz',
    'BMLrub/rub001/0001_poses.npz',
    100.0,
    3.0,
    [(['jump'], 1, 2), (['dance'], 0.0, 3.0)],
  )
  add(
    'train',
    3,
    'KIT/KIT/3/walk03_poses.npz',
    'KIT/3/walk03_poses.npz',
    59.9999885559082,
    2.5,
    [(['stand', 'turn'], 0.0, 2.5)],
  )
  add(
    'train',
    4,
    'CMU/CMU/02/02_01_poses.npz',
    'CMU/CMU/02/02_01_poses.npz',
    120.0,
    2.0,
    [(['dance'], 0.0, 2.0)],
  )  # no subset1 class
  add(
    'train',
    5,
    'CMU/CMU/03/03_01_poses.npz',
    'CMU/CMU/03/03_01_poses.npz',
    60.0,
    34.0,
    [(['walk'], 0.0, 34.0)],
  )  # 1020 frames > 1000
  add(
    'train',
    6,
    'CMU/CMU/04/04_01_poses.npz',
    None,
    120.0,
    2.0,
    [(['walk'], 0.0, 2.0)],
  )  # npz missing
  add(
    'train',
    7,
    'CMU/CMU/05/05_01_poses.npz',
    'CMU/CMU/05/05_01_poses.npz',
    120.0,
    2.0,
    [],
    frame_ann=False,
  )  # sequence-level labels only
  bad = random_poses(240, seed=8)
  bad[17, 5] = np.nan
  add(
    'train',
    8,
    'CMU/CMU/06/06_01_poses.npz',
    'CMU/CMU/06/06_01_poses.npz',
    120.0,
    2.0,
    [(['walk'], 0.0, 2.0)],
    poses=bad,
  )
  # val: DFaust mapping, 120.00004 and 250 fps, gaps, end_t > dur, bad fps.
  add(
    'val',
    101,
    'DFaust/DFaust_67/50002/50002_poses.npz',
    'DFaust_67/50002/50002_poses.npz',
    120.00004577636719,
    3.0,
    [(['jump'], 0, 1), (['walk', 'jump'], 2.0, 3.2)],
  )
  add(
    'val',
    102,
    'EKUT/EKUT/7/x_poses.npz',
    'EKUT/EKUT/7/x_poses.npz',
    250.0,
    1.5,
    [(['stand'], 0.25, 1.5), (None, 0.0, 1.5)],
  )
  add(
    'val',
    103,
    'CMU/CMU/07/07_01_poses.npz',
    'CMU/CMU/07/07_01_poses.npz',
    120.0,
    2.0,
    [(['walk'], 0.0, 2.0)],
    mocap_framerate=np.array(0.0),
  )
  for split in ('train', 'val'):
    write_release(
      root, split, [s['entry'] for s in seqs.values() if s['split'] == split]
    )
  # A malformed segment (end_t < start_t) in val.
  path = os.path.join(root, 'babel_v1.0_release', 'val.json')
  with open(path) as f:
    data = json.load(f)
  e = entry(104, 'CMU/CMU/08/08_01_poses.npz', 2.0, [(['walk'], 1.5, 0.5)])
  data['104'] = e
  with open(path, 'w') as f:
    json.dump(data, f)
  write_amass(
    os.path.join(amass_root, e['feat_p']), random_poses(240, 104), 120.0
  )
  return seqs
