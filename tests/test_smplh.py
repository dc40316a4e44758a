"""Tests for the NumPy SMPL-H model: loading, FK, skinning, NTU joint map."""

import math

import fixtures_babel as fb
import numpy as np
import pytest

from data_builders.babel import smplh

_LEFT_ARM = {18, 20} | set(range(22, 37))  # elbow, wrist, left-hand fingers


@pytest.fixture(scope='module')
def arrays():
  return fb.model_arrays(seed=3)


@pytest.fixture(scope='module')
def flat(arrays):
  return smplh.model_from_arrays(arrays, flat_hand_mean=True)


@pytest.fixture(scope='module')
def model(arrays):
  return smplh.model_from_arrays(arrays)


def _expm_skew(w, terms=40):
  """exp([w]x) by its power series: independent of the Rodrigues formula."""
  k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
  out, term = np.eye(3), np.eye(3)
  for n in range(1, terms):
    term = term @ k / n
    out = out + term
  return out


def _reference(arrays, pose):
  """smplx-style LBS with 4x4 transforms, one frame, no mean hand pose."""
  v = arrays['v_template']
  j = arrays['J_regressor'] @ v
  rots = [_expm_skew(pose[3 * k : 3 * k + 3]) for k in range(52)]
  feat = np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
  v_posed = v + (arrays['posedirs'].reshape(-1, 459) @ feat).reshape(-1, 3)
  glob, rel = [], []
  for k in range(52):
    local = np.eye(4)
    local[:3, :3] = rots[k]
    p = smplh.PARENTS[k]
    local[:3, 3] = j[k] - (j[p] if p >= 0 else 0.0)
    g = glob[p] @ local if p >= 0 else local
    glob.append(g)
    a = g.copy()
    a[:3, 3] -= g[:3, :3] @ j[k]
    rel.append(a)
  per_vertex = np.einsum('vk,kab->vab', arrays['weights'], np.stack(rel))
  verts = (
    np.einsum('vab,vb->va', per_vertex[:, :3, :3], v_posed)
    + per_vertex[:, :3, 3]
  )
  return np.stack([g[:3, 3] for g in glob]), verts


def test_kinematic_tree_and_vertex_ids():
  parents = smplh.PARENTS
  assert len(parents) == 52 and parents[0] == -1
  assert all(0 <= parents[k] < k for k in range(1, 52))
  assert parents[:22] == (
    -1,
    0,
    0,
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    9,
    9,
    12,
    13,
    14,
    16,
    17,
    18,
    19,
  )
  # Finger chains: index1 hangs off the wrist, index2 off index1, ...
  assert [parents[k] for k in (22, 23, 24, 25, 34, 36)] == [
    20,
    22,
    23,
    20,
    20,
    35,
  ]
  assert [parents[k] for k in (37, 38, 39, 49, 51)] == [21, 37, 38, 21, 50]
  assert smplh.JOINT_NAMES[22] == 'left_index1'
  assert smplh.JOINT_NAMES[37] == 'right_index1'
  assert smplh.JOINT_NAMES[36] == 'left_thumb3'
  # smplx vertex_ids['smplh'] fingertips: l/r thumb and index.
  tips = dict(zip(smplh.VERTEX_JOINT_NAMES, smplh.SMPLH_VERTEX_IDS))
  assert (tips['left_thumb_tip'], tips['left_index_tip']) == (2746, 2319)
  assert (tips['right_thumb_tip'], tips['right_index_tip']) == (6191, 5782)
  assert smplh.NUM_OUTPUT_JOINTS == 73


def test_ntu_joint_map():
  joints = np.arange(73, dtype=float)[:, None].repeat(3, axis=1)
  ntu = smplh.to_ntu(joints[None])[0, :, 0].astype(int)
  # docs/data_and_eval.md §3.3, 1-based NTU joint <- SMPL-H output index.
  doc = {
    1: 0,
    2: 3,
    3: 12,
    4: 15,
    5: 16,
    6: 18,
    7: 20,
    8: 22,
    9: 17,
    10: 19,
    11: 21,
    12: 37,
    13: 1,
    14: 4,
    15: 7,
    16: 10,
    17: 2,
    18: 5,
    19: 8,
    20: 11,
    21: 9,
    22: 63,
    23: 64,
    24: 68,
    25: 69,
  }
  assert ntu.tolist() == [doc[k] for k in range(1, 26)]
  names = smplh.JOINT_NAMES + smplh.VERTEX_JOINT_NAMES
  # The documented 22-25 swap: "tip of hand" <- thumb tip, "thumb" <- index.
  assert [names[i] for i in ntu[21:]] == [
    'left_thumb_tip',
    'left_index_tip',
    'right_thumb_tip',
    'right_index_tip',
  ]
  assert names[ntu[7]] == 'left_index1' and names[ntu[20]] == 'spine3'


def test_zero_pose_gives_rest_joints_and_vertices(arrays, flat):
  joints, verts = smplh.forward(flat, np.zeros((2, 156)), return_vertices=True)
  rest = arrays['J_regressor'] @ arrays['v_template']
  np.testing.assert_allclose(
    joints[:, :52], np.broadcast_to(rest, (2, 52, 3)), atol=1e-12
  )
  np.testing.assert_allclose(verts[1], arrays['v_template'], atol=1e-12)
  np.testing.assert_allclose(
    joints[0, 52:], arrays['v_template'][list(fb.VERTEX_IDS)], atol=1e-12
  )


def test_single_joint_rotation_moves_only_descendants(arrays, flat):
  pose = np.zeros(156)
  pose[16 * 3 : 16 * 3 + 3] = [0.0, 0.0, math.pi / 2]  # left shoulder, 90° z
  joints = smplh.forward(flat, pose[None])[0]
  rest = arrays['J_regressor'] @ arrays['v_template']
  rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  for k in range(52):
    want = rest[16] + rz @ (rest[k] - rest[16]) if k in _LEFT_ARM else rest[k]
    np.testing.assert_allclose(joints[k], want, atol=1e-12, err_msg=str(k))
  # Vertex joints: pose blend shapes of (R_16 - I) first, then the rigid
  # rotation for vertices skinned only to the arm, nothing more elsewhere.
  feat = np.zeros((51, 3, 3))
  feat[15] = rz - np.eye(3)
  offsets = arrays['posedirs'] @ feat.ravel()
  for i, vid in enumerate(fb.VERTEX_IDS):
    v_posed = arrays['v_template'][vid] + offsets[vid]
    on_arm = set(np.flatnonzero(arrays['weights'][vid])) <= _LEFT_ARM
    want = rest[16] + rz @ (v_posed - rest[16]) if on_arm else v_posed
    if i in (11, 12, 13, 14, 15):  # left fingertips are all on the arm
      assert on_arm
    np.testing.assert_allclose(joints[52 + i], want, atol=1e-12)


def test_root_orientation_rotates_everything_about_the_root(arrays, flat):
  pose = np.zeros(156)
  pose[:3] = [math.pi / 2, 0.0, 0.0]
  joints, verts = smplh.forward(flat, pose[None], return_vertices=True)
  rest = arrays['J_regressor'] @ arrays['v_template']
  rx = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
  np.testing.assert_allclose(
    joints[0, :52], rest[0] + (rest - rest[0]) @ rx.T, atol=1e-12
  )
  np.testing.assert_allclose(
    verts[0], rest[0] + (arrays['v_template'] - rest[0]) @ rx.T, atol=1e-12
  )


def test_vertex_joints_follow_lbs_with_pose_blend_shapes(arrays, flat):
  pose = fb.random_poses(1, seed=11, scale=0.5)[0]
  joints, verts = smplh.forward(flat, pose[None], return_vertices=True)
  ref_joints, ref_verts = _reference(arrays, pose)
  np.testing.assert_allclose(joints[0, :52], ref_joints, atol=1e-10)
  np.testing.assert_allclose(verts[0], ref_verts, atol=1e-10)
  np.testing.assert_allclose(
    joints[0, 52:], ref_verts[list(fb.VERTEX_IDS)], atol=1e-10
  )
  # The compact model (21 vertices) gives the same joints.
  np.testing.assert_allclose(
    smplh.forward(flat.compact(), pose[None]), joints, atol=1e-12
  )
  # Pose blend shapes matter for the fingertips.
  no_blend = dict(arrays, posedirs=np.zeros_like(arrays['posedirs']))
  other = smplh.forward(
    smplh.model_from_arrays(no_blend, flat_hand_mean=True), pose[None]
  )
  assert np.abs(other[0, 63:73] - joints[0, 63:73]).max() > 1e-3
  np.testing.assert_allclose(other[0, :52], joints[0, :52], atol=1e-12)


def test_mean_hand_pose_is_added_by_default(arrays, model, flat):
  pose = fb.random_poses(3, seed=5)
  np.testing.assert_allclose(
    smplh.forward(model, pose),
    smplh.forward(flat, pose + model.pose_mean),
    atol=1e-12,
  )
  assert np.all(model.pose_mean[:66] == 0)
  np.testing.assert_array_equal(model.pose_mean[66:111], arrays['hands_meanl'])
  np.testing.assert_array_equal(model.pose_mean[111:], arrays['hands_meanr'])
  # At zero pose the mean hand only moves the finger joints past the bases.
  joints = smplh.forward(model, np.zeros((1, 156)))[0]
  rest = arrays['J_regressor'] @ arrays['v_template']
  unmoved = list(range(22)) + [22, 25, 28, 31, 34, 37, 40, 43, 46, 49]
  np.testing.assert_allclose(joints[unmoved], rest[unmoved], atol=1e-12)
  assert np.abs(joints[[23, 24, 38]] - rest[[23, 24, 38]]).min() > 1e-6


def test_axis_angle_to_matrix():
  rng = np.random.default_rng(0)
  vecs = np.concatenate(
    [
      rng.normal(0, 1.5, (20, 3)),
      np.zeros((1, 3)),
      [[1e-9, -2e-9, 3e-9], [math.pi, 0, 0]],
    ]
  )
  mats = smplh.axis_angle_to_matrix(vecs)
  for v, m in zip(vecs, mats):
    np.testing.assert_allclose(m, _expm_skew(v), atol=1e-12)
  np.testing.assert_allclose(mats[-1], np.diag([1.0, -1.0, -1.0]), atol=1e-15)


def test_pkl_npz_and_sparse_regressor_load_identically(tmp_path, arrays):
  a = smplh.load_model(fb.write_model(tmp_path / 'm.pkl', arrays))
  b = smplh.load_model(fb.write_model(tmp_path / 'm.npz', arrays))
  pytest.importorskip('scipy.sparse')
  c = smplh.load_model(
    fb.write_model(tmp_path / 's.pkl', arrays, sparse_regressor=True)
  )
  for other in (b, c):
    for field in (
      'parents',
      'j_rest',
      'v_template',
      'weights',
      'posedirs',
      'pose_mean',
      'vertex_ids',
    ):
      np.testing.assert_allclose(
        getattr(a, field), getattr(other, field), atol=1e-15, err_msg=field
      )


def _error(path, **kwargs):
  with pytest.raises(smplh.SmplhModelError) as e:
    smplh.load_model(path, **kwargs)
  return str(e.value)


def test_model_file_errors_are_clear(tmp_path, arrays):
  assert 'smplh_model=' in _error(None)
  assert 'not found' in _error(tmp_path / 'nope.pkl')
  junk = tmp_path / 'junk.pkl'
  junk.write_bytes(b'not a pickle at all')
  assert str(junk) in _error(junk) and 'could not unpickle' in _error(junk)
  # chumpy in a key FK needs: refused with instructions; elsewhere: ignored.
  chumpy = fb.write_chumpy_pickle(
    tmp_path / 'ch.pkl', arrays, ('posedirs', 'shapedirs')
  )
  msg = _error(chumpy)
  assert 'chumpy' in msg and 'clean_ch.py' in msg and str(chumpy) in msg
  assert "['posedirs']" in msg
  ok = smplh.load_model(fb.write_chumpy_pickle(tmp_path / 'ok.pkl', arrays))
  np.testing.assert_array_equal(ok.posedirs, arrays['posedirs'])
  smpl = dict(arrays, kintree_table=arrays['kintree_table'][:, :24])
  msg = _error(fb.write_model(tmp_path / 'smpl.pkl', smpl))
  assert '24 joints' in msg and 'SMPL-H' in msg
  bad = dict(arrays, posedirs=arrays['posedirs'][..., :207])
  assert 'posedirs' in _error(fb.write_model(tmp_path / 'pd.npz', bad))
  no_mean = {k: v for k, v in arrays.items() if k != 'hands_meanl'}
  path = fb.write_model(tmp_path / 'nomean.npz', no_mean)
  msg = _error(path)
  assert 'hands_meanl' in msg and 'flat_hand_mean=True' in msg
  assert smplh.load_model(path, flat_hand_mean=True).pose_mean.sum() == 0
  real_ids = {k: v for k, v in arrays.items() if k != smplh.VERTEX_IDS_KEY}
  msg = _error(fb.write_model(tmp_path / 'small.pkl', real_ids))
  assert '6890' in msg and '260 vertices' in msg


def test_default_vertex_ids_on_a_full_size_mesh():
  rng = np.random.default_rng(1)
  nv = 6890
  home = rng.integers(0, 52, nv)
  home[:52] = np.arange(52)
  weights = np.zeros((nv, 52), np.float32)
  weights[np.arange(nv), home] = 1.0
  regressor = np.zeros((52, nv), np.float32)
  regressor[np.arange(52), np.arange(52)] = 1.0
  arrays = {
    'v_template': rng.normal(0, 0.5, (nv, 3)),
    'J_regressor': regressor,
    'kintree_table': np.stack(
      [np.r_[2**32 - 1, smplh.PARENTS[1:]], np.arange(52)]
    ),
    'weights': weights,
    'posedirs': np.zeros((nv, 3, 459), np.float32),
  }
  m = smplh.model_from_arrays(arrays, flat_hand_mean=True)
  joints, verts = smplh.forward(
    m, fb.random_poses(1, seed=2), return_vertices=True
  )
  np.testing.assert_allclose(
    joints[:, 52:], verts[:, list(smplh.SMPLH_VERTEX_IDS)], atol=1e-12
  )
