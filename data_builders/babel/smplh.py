"""SMPL-H body model in NumPy: model loading, forward kinematics, vertex joints.

This reproduces what BABEL's joint export computes with smplx
(``SMPLH(path, gender='male', use_pca=False, create_transl=False)``, called
with zero betas and no translation; docs/data_and_eval.md §3.3):

* 52 skeleton joints from forward kinematics of the rest joints
  ``J_regressor @ v_template`` (zero betas, so the shaped mesh is the template);
* 21 extra joints read off mesh vertices (smplx ``VertexJointSelector`` order:
  nose, eyes, ears, feet, then left and right fingertips thumb..pinky), posed
  by linear blend skinning of the template plus the pose blend shapes;
* the hand poses are offset by the model's mean hand pose (``hands_meanl`` /
  ``hands_meanr``), because smplx's default ``flat_hand_mean=False`` adds it and
  BABEL kept the default. ``flat_hand_mean=True`` drops the offset (a deviation
  from BABEL that only moves the finger joints and fingertips).

Only NumPy is needed. The model file is the user's licensed SMPL-H male model:
an smplx-style ``.pkl`` of plain arrays (the MANO "models_cleaned_merged"
``SMPLH_male.pkl``) or an ``.npz`` with the same keys. chumpy objects in keys
FK does not use are ignored; in a needed key they are refused with conversion
instructions. A scipy-sparse ``J_regressor`` is densified without scipy.
"""

import dataclasses
import functools
import os
import pickle
import zipfile

import numpy as np

NUM_JOINTS = 52
NUM_BODY_JOINTS = 22  # pelvis .. right wrist
POSE_WIDTH = 3 * NUM_JOINTS  # 156 axis-angle values per frame
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)  # 459 pose blend-shape coefficients

JOINT_NAMES = (
  'pelvis',
  'left_hip',
  'right_hip',
  'spine1',
  'left_knee',
  'right_knee',
  'spine2',
  'left_ankle',
  'right_ankle',
  'spine3',
  'left_foot',
  'right_foot',
  'neck',
  'left_collar',
  'right_collar',
  'head',
  'left_shoulder',
  'right_shoulder',
  'left_elbow',
  'right_elbow',
  'left_wrist',
  'right_wrist',
) + tuple(
  f'{side}_{finger}{k}'
  for side in ('left', 'right')
  for finger in ('index', 'middle', 'pinky', 'ring', 'thumb')
  for k in (1, 2, 3)
)

# The SMPL-H kinematic tree (kintree_table[0] of the model files, root = -1):
# the SMPL body without its two hand joints, then three-joint finger chains
# hanging off each wrist (20 = left, 21 = right).
PARENTS = (
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
) + sum(
  (
    (wrist, base, base + 1)
    for wrist, first in ((20, 22), (21, 37))
    for base in range(first, first + 15, 3)
  ),
  (),
)

# smplx VertexJointSelector for SMPL-H (vertex_ids['smplh']), in output order.
VERTEX_JOINT_NAMES = (
  'nose',
  'right_eye',
  'left_eye',
  'right_ear',
  'left_ear',
  'left_big_toe',
  'left_small_toe',
  'left_heel',
  'right_big_toe',
  'right_small_toe',
  'right_heel',
  'left_thumb_tip',
  'left_index_tip',
  'left_middle_tip',
  'left_ring_tip',
  'left_pinky_tip',
  'right_thumb_tip',
  'right_index_tip',
  'right_middle_tip',
  'right_ring_tip',
  'right_pinky_tip',
)
SMPLH_VERTEX_IDS = (
  332,
  6260,
  2800,
  4071,
  583,
  3216,
  3226,
  3387,
  6617,
  6624,
  6787,
  2746,
  2319,
  2445,
  2556,
  2673,
  6191,
  5782,
  5905,
  6016,
  6133,
)
NUM_OUTPUT_JOINTS = NUM_JOINTS + len(SMPLH_VERTEX_IDS)  # 73

# NTU joint (0-based) <- SMPL-H output joint (BABEL dutils.smpl_to_nturgbd).
# NTU 8/12 ("hand") are the index-finger bases; NTU 22-25 come from the thumb
# and index fingertips, i.e. "tip of hand" is the thumb tip and "thumb" the
# index tip. The swap is BABEL's and is kept for compatibility.
NTU_FROM_SMPLH = (
  0,
  3,
  12,
  15,
  16,
  18,
  20,
  22,
  17,
  19,
  21,
  37,
  1,
  4,
  7,
  10,
  2,
  5,
  8,
  11,
  9,
  63,
  64,
  68,
  69,
)

# Optional key that only synthetic test models carry: vertex ids to use instead
# of SMPLH_VERTEX_IDS (a small mesh has no vertex 6787). Real files lack it.
VERTEX_IDS_KEY = 'skel_jax_vertex_joint_ids'

_REQUIRED_KEYS = (
  'v_template',
  'J_regressor',
  'kintree_table',
  'weights',
  'posedirs',
)
_HAND_MEAN_KEYS = ('hands_meanl', 'hands_meanr')


class SmplhModelError(ValueError):
  """The SMPL-H model file is missing or not a usable SMPL-H model."""


@dataclasses.dataclass(frozen=True, eq=False)
class SmplhModel:
  """The arrays forward kinematics needs (float64, zero betas).

  Attributes:
    parents: (52,) parent joint per joint, -1 for the root.
    j_rest: (52, 3) rest joints, ``J_regressor @ v_template``.
    v_template: (V, 3) template mesh (only the vertex-joint rows if compact).
    weights: (V, 52) skinning weights.
    posedirs: (V, 3, 459) pose blend shapes.
    pose_mean: (156,) offset added to every pose (the mean hand pose, or 0).
    vertex_ids: (21,) mesh vertex of each extra joint, indexing v_template.
    source: where the model came from (for messages).
  """

  parents: np.ndarray
  j_rest: np.ndarray
  v_template: np.ndarray
  weights: np.ndarray
  posedirs: np.ndarray
  pose_mean: np.ndarray
  vertex_ids: np.ndarray
  source: str = '<arrays>'

  @property
  def num_vertices(self):
    return self.v_template.shape[0]

  def compact(self):
    """The same model restricted to the 21 vertices the extra joints need."""
    ids = self.vertex_ids
    return dataclasses.replace(
      self,
      v_template=self.v_template[ids],
      weights=self.weights[ids],
      posedirs=self.posedirs[ids],
      vertex_ids=np.arange(len(ids)),
    )


# ---------------------------------------------------------------------------
# Loading.
# ---------------------------------------------------------------------------
class _ChumpyStub:
  """Stands in for any pickled chumpy object (chumpy is not needed here)."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state


class _SparseStub:
  """Stands in for a pickled scipy.sparse matrix; rebuilt densely by hand."""

  fmt = None

  def __setstate__(self, state):
    self.__dict__.update(state)

  def toarray(self):
    state = self.__dict__
    shape = tuple(int(s) for s in state.get('_shape', state.get('shape')))
    dense = np.zeros(shape, np.float64)
    data = np.asarray(state['data'], np.float64)
    if self.fmt in ('csc', 'csr'):
      indptr = np.asarray(state['indptr'], np.int64)
      minor = np.asarray(state['indices'], np.int64)
      major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
      rows, cols = (minor, major) if self.fmt == 'csc' else (major, minor)
    elif self.fmt == 'coo':
      if 'coords' in state:
        rows, cols = state['coords']
      else:
        rows, cols = state['row'], state['col']
    else:
      raise pickle.UnpicklingError(f'unsupported sparse format {self.fmt!r}')
    np.add.at(dense, (np.asarray(rows), np.asarray(cols)), data)
    return dense


@functools.lru_cache(maxsize=None)
def _sparse_class(name):
  return type(name, (_SparseStub,), {'fmt': name[:3]})


# Non-numpy globals a plain-array model pickle may reference (py2 and py3).
_SAFE_GLOBALS = {
  ('copy_reg', '_reconstructor'),
  ('copyreg', '_reconstructor'),
  ('copyreg', '__newobj__'),
  ('_codecs', 'encode'),
  ('__builtin__', 'object'),
  ('builtins', 'object'),
  ('__builtin__', 'set'),
  ('builtins', 'set'),
  ('__builtin__', 'frozenset'),
  ('builtins', 'frozenset'),
  ('__builtin__', 'slice'),
  ('builtins', 'slice'),
  ('__builtin__', 'complex'),
  ('builtins', 'complex'),
  ('__builtin__', 'bytearray'),
  ('builtins', 'bytearray'),
}


class _ModelUnpickler(pickle.Unpickler):
  """Loads only numpy data (plus sparse matrices, densified without scipy)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.chumpy = set()  # chumpy globals met (their objects become stubs)

  def find_class(self, module, name):
    root = module.split('.')[0]
    if root == 'chumpy':
      self.chumpy.add(f'{module}.{name}')
      return _ChumpyStub
    if module.startswith('scipy.sparse'):
      return _sparse_class(name)
    if root == 'numpy':
      # numpy 2 renamed numpy.core; old pickles still name it.
      if module.startswith('numpy.core') and hasattr(np, '_core'):
        module = 'numpy._core' + module[len('numpy.core') :]
      return super().find_class(module, name)
    if (module, name) in _SAFE_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
      f'unexpected object {module}.{name} (only numpy arrays are expected)'
    )


def _chumpy_message(path, what):
  return (
    f'{path}: the SMPL-H model pickle holds chumpy objects ({what}), like '
    'the original MANO/SMPL-H release. Convert it to plain NumPy arrays '
    'first, in an environment that has chumpy: smplx ships '
    '`tools/clean_ch.py --input-models PATH --output-folder OUT` for this '
    '(and `tools/merge_smplh_mano.py` to merge the MANO hand data into '
    'SMPL-H); or load it there with pickle and re-save every value with '
    'np.asarray into a .pkl or .npz. Then pass the converted file as '
    'smplh_model.'
  )


def _read_arrays(path):
  """Dict of the model file's values (lazy for npz, densified sparse)."""
  with open(path, 'rb') as f:
    magic = f.read(4)
  if magic.startswith(b'PK'):
    try:
      with np.load(path, allow_pickle=False) as z:
        out = {}
        for k in z.files:
          if k in _REQUIRED_KEYS + _HAND_MEAN_KEYS + (VERTEX_IDS_KEY,):
            out[k] = z[k]
        return out
    except (ValueError, OSError, zipfile.BadZipFile) as e:
      raise SmplhModelError(
        f'{path}: expected an .npz of plain numeric SMPL-H arrays, could not '
        f'read it: {e}'
      ) from None
  unpickler = None
  try:
    with open(path, 'rb') as f:
      unpickler = _ModelUnpickler(f, encoding='latin1')
      data = unpickler.load()
  except Exception as e:  # noqa: BLE001 -- any unpickling failure is fatal here
    if unpickler is not None and unpickler.chumpy:
      raise SmplhModelError(
        _chumpy_message(path, ', '.join(sorted(unpickler.chumpy)))
      ) from None
    raise SmplhModelError(
      f'{path}: expected an smplx-style SMPL-H .pkl (a dict of numpy '
      f'arrays) or .npz, could not unpickle it: {type(e).__name__}: {e}'
    ) from None
  if not isinstance(data, dict):
    raise SmplhModelError(
      f'{path}: expected a dict of arrays in the pickle, '
      f'found {type(data).__name__}'
    )
  needed = _REQUIRED_KEYS + _HAND_MEAN_KEYS + (VERTEX_IDS_KEY,)
  chumpy = sorted(k for k in needed if isinstance(data.get(k), _ChumpyStub))
  if chumpy:
    raise SmplhModelError(_chumpy_message(path, f'in keys {chumpy}'))
  return data


def _dense(x):
  if hasattr(x, 'toarray'):  # scipy.sparse (or our stub)
    x = x.toarray()
  return np.asarray(x)


def model_from_arrays(arrays, *, flat_hand_mean=False, source='<arrays>'):
  """Validates SMPL-H arrays (keys as in the model files) into a SmplhModel."""

  def fail(msg):
    raise SmplhModelError(f'{source}: {msg}')

  missing = [k for k in _REQUIRED_KEYS if k not in arrays]
  if not flat_hand_mean:
    missing += [k for k in _HAND_MEAN_KEYS if k not in arrays]
  if missing:
    hint = ''
    if set(missing) <= set(_HAND_MEAN_KEYS):
      hint = (
        ' (BABEL used smplx with flat_hand_mean=False, which needs the '
        'mean hand pose; use the MANO-merged SMPLH_male.pkl, or pass '
        'flat_hand_mean=True to skip it as a documented deviation)'
      )
    fail(f'expected SMPL-H model keys {missing}, which are missing{hint}')
  try:
    v_template = _dense(arrays['v_template']).astype(np.float64)
    regressor = _dense(arrays['J_regressor']).astype(np.float64)
    kintree = _dense(arrays['kintree_table']).astype(np.int64)
    weights = _dense(arrays['weights']).astype(np.float64)
    posedirs = _dense(arrays['posedirs']).astype(np.float64)
  except (TypeError, ValueError) as e:
    fail(f'expected numeric arrays: {e}')
  if v_template.ndim != 2 or v_template.shape[1] != 3:
    fail(f'expected v_template of shape (V, 3), found {v_template.shape}')
  nv = v_template.shape[0]
  if kintree.ndim != 2 or kintree.shape[0] != 2:
    fail(f'expected kintree_table of shape (2, 52), found {kintree.shape}')
  if kintree.shape[1] != NUM_JOINTS:
    fail(
      f'expected the 52-joint SMPL-H kinematic tree, found '
      f'{kintree.shape[1]} joints (SMPL has 24, SMPL-X 55): pass the SMPL-H '
      'male model'
    )
  parents = kintree[0].copy()
  parents[0] = -1  # the files store 2**32 - 1 for the root
  if tuple(parents.tolist()) != PARENTS:
    fail(
      'expected the SMPL-H kinematic tree in kintree_table[0], found '
      f'{parents.tolist()}'
    )
  for key, arr, shape in (
    ('J_regressor', regressor, (NUM_JOINTS, nv)),
    ('weights', weights, (nv, NUM_JOINTS)),
    ('posedirs', posedirs, (nv, 3, NUM_POSE_BASIS)),
  ):
    if arr.shape != shape:
      fail(f'expected {key} of shape {shape}, found {arr.shape}')
  pose_mean = np.zeros(POSE_WIDTH)
  if not flat_hand_mean:
    for key, start in zip(_HAND_MEAN_KEYS, (66, 111)):
      mean = _dense(arrays[key]).astype(np.float64).reshape(-1)
      if mean.shape != (45,):
        fail(f'expected {key} of shape (45,), found {mean.shape}')
      pose_mean[start : start + 45] = mean
  ids = np.asarray(arrays.get(VERTEX_IDS_KEY, SMPLH_VERTEX_IDS), np.int64)
  if ids.shape != (len(SMPLH_VERTEX_IDS),):
    fail(f'expected {VERTEX_IDS_KEY} of shape (21,), found {ids.shape}')
  if ids.min() < 0 or ids.max() >= nv:
    fail(
      f'expected a mesh with vertex ids up to {ids.max()} for the 21 '
      f'vertex joints (the SMPL-H mesh has 6890 vertices), found {nv} '
      'vertices'
    )
  for name, arr in (
    ('v_template', v_template),
    ('J_regressor', regressor),
    ('weights', weights),
    ('posedirs', posedirs),
    ('mean hand pose', pose_mean),
  ):
    if not np.all(np.isfinite(arr)):
      fail(f'expected finite values in {name}')
  return SmplhModel(
    parents=parents,
    j_rest=regressor @ v_template,
    v_template=v_template,
    weights=weights,
    posedirs=posedirs,
    pose_mean=pose_mean,
    vertex_ids=ids,
    source=str(source),
  )


def load_model(path, *, flat_hand_mean=False):
  """Loads and validates an SMPL-H model file (.pkl or .npz).

  Raises:
    SmplhModelError: naming the file and what was expected.
  """
  if path is None or str(path) == '':
    raise SmplhModelError(
      'BABEL joints need the licensed SMPL-H male model (it cannot be '
      'downloaded here): pass smplh_model=/path/to/SMPLH_male.pkl '
      '(command line: --builder_option=smplh_model=PATH)'
    )
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise SmplhModelError(
      f'{path}: SMPL-H model file not found (expected the smplx-style '
      'SMPLH_male.pkl or an .npz with the same keys)'
    )
  arrays = _read_arrays(path)
  return model_from_arrays(arrays, flat_hand_mean=flat_hand_mean, source=path)


# ---------------------------------------------------------------------------
# Forward kinematics and skinning.
# ---------------------------------------------------------------------------
def axis_angle_to_matrix(rotvec):
  """Rodrigues: (..., 3) axis-angle -> (..., 3, 3) rotation matrices."""
  r = np.asarray(rotvec, np.float64)
  theta2 = np.sum(r * r, axis=-1)[..., None, None]
  theta = np.sqrt(theta2)
  small = theta2 < 1e-12
  safe = np.where(small, 1.0, theta)
  # sin(t)/t and (1-cos t)/t^2 with their Taylor limits near zero.
  a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
  # 1 - cos t = 2 sin^2(t/2) avoids cancellation for small angles.
  b = np.where(
    small, 0.5 - theta2 / 24.0, 2.0 * (np.sin(0.5 * safe) / safe) ** 2
  )
  x, y, z = r[..., 0], r[..., 1], r[..., 2]
  zero = np.zeros_like(x)
  k = np.stack(
    [
      np.stack([zero, -z, y], -1),
      np.stack([z, zero, -x], -1),
      np.stack([-y, x, zero], -1),
    ],
    -2,
  )
  eye = np.broadcast_to(np.eye(3), k.shape)
  return eye + a * k + b * (k @ k)


def forward(model, poses, *, return_vertices=False):
  """SMPL-H forward pass, zero betas, no translation.

  Args:
    model: a SmplhModel.
    poses: (T, 156) axis-angle poses (AMASS layout: root, 21 body joints,
      15 left-hand joints, 15 right-hand joints).
    return_vertices: also return the whole posed mesh (T, V, 3).

  Returns:
    joints: (T, 73, 3) float64 (52 skeleton joints, then the 21 vertex
    joints), and the vertices if requested.
  """
  poses = np.asarray(poses, np.float64)
  if poses.ndim != 2 or poses.shape[1] != POSE_WIDTH:
    raise ValueError(
      f'expected poses of shape (T, {POSE_WIDTH}), found {poses.shape}'
    )
  t = poses.shape[0]
  rot = axis_angle_to_matrix((poses + model.pose_mean).reshape(t, -1, 3))
  j = model.j_rest
  g_rot = np.empty_like(rot)
  g_pos = np.empty((t, NUM_JOINTS, 3))
  g_rot[:, 0], g_pos[:, 0] = rot[:, 0], j[0]
  for k in range(1, NUM_JOINTS):  # parents precede children in SMPL-H order
    p = model.parents[k]
    g_rot[:, k] = g_rot[:, p] @ rot[:, k]
    g_pos[:, k] = g_pos[:, p] + g_rot[:, p] @ (j[k] - j[p])
  # Skinning maps rest positions: x -> G_rot (x - j_rest) + G_pos.
  g_off = g_pos - np.einsum('tjab,jb->tja', g_rot, j)
  feat = (rot[:, 1:] - np.eye(3)).reshape(t, NUM_POSE_BASIS)

  def skin(rows):
    v_posed = model.v_template[rows] + np.einsum(
      'tp,vcp->tvc', feat, model.posedirs[rows]
    )
    w = model.weights[rows]
    m_rot = np.einsum('vj,tjab->tvab', w, g_rot)
    m_off = np.einsum('vj,tja->tva', w, g_off)
    return np.einsum('tvab,tvb->tva', m_rot, v_posed) + m_off

  joints = np.concatenate([g_pos, skin(model.vertex_ids)], axis=1)
  if return_vertices:
    return joints, skin(np.arange(model.num_vertices))
  return joints


def to_ntu(joints):
  """(..., 73, 3) SMPL-H output joints -> (..., 25, 3) NTU RGB+D joints."""
  return np.asarray(joints)[..., NTU_FROM_SMPLH, :]
