"""The NTU RGB+D 25-joint skeleton graph and its adjacency partitions.

Joint order is Kinect v2 / NTU RGB+D (0-based here; the docs use 1-based ids).
Bones are the ST-GCN ``ntu-rgb+d`` / 2s-AGCN "inward" list (child -> parent,
pointing towards the graph centre, joint 21 = index 20).
"""

import functools

import numpy as np

NUM_JOINTS = 25
CENTER = 20  # joint 21, "spine at the shoulders"

JOINT_NAMES = (
  'spine_base',
  'spine_mid',
  'neck',
  'head',
  'left_shoulder',
  'left_elbow',
  'left_wrist',
  'left_hand',
  'right_shoulder',
  'right_elbow',
  'right_wrist',
  'right_hand',
  'left_hip',
  'left_knee',
  'left_ankle',
  'left_foot',
  'right_hip',
  'right_knee',
  'right_ankle',
  'right_foot',
  'spine_shoulder',
  'left_hand_tip',
  'left_thumb',
  'right_hand_tip',
  'right_thumb',
)

# 1-based (child, parent) pairs exactly as listed by ST-GCN / 2s-AGCN.
_INWARD_1BASED = (
  (1, 2),
  (2, 21),
  (3, 21),
  (4, 3),
  (5, 21),
  (6, 5),
  (7, 6),
  (8, 7),
  (9, 21),
  (10, 9),
  (11, 10),
  (12, 11),
  (13, 1),
  (14, 13),
  (15, 14),
  (16, 15),
  (17, 1),
  (18, 17),
  (19, 18),
  (20, 19),
  (22, 23),
  (23, 8),
  (24, 25),
  (25, 12),
)
INWARD = tuple((a - 1, b - 1) for a, b in _INWARD_1BASED)
OUTWARD = tuple((b, a) for a, b in INWARD)

# Left/right mirror permutation (AimCLR ``transform_order['ntu']``).
FLIP_PERMUTATION = (
  0,
  1,
  2,
  3,
  8,
  9,
  10,
  11,
  4,
  5,
  6,
  7,
  16,
  17,
  18,
  19,
  12,
  13,
  14,
  15,
  20,
  23,
  24,
  21,
  22,
)


def _edge_matrix(links, num_nodes=NUM_JOINTS):
  """2s-AGCN ``edge2mat``: ``A[j, i] = 1`` for each link ``(i, j)``.

  With ``out[w] = sum_v x[v] A[v, w]`` an inward link (child, parent) thus makes
  the child receive from its parent; we keep the reference orientation so that
  pretrained weights and published numbers stay comparable.
  """
  a = np.zeros((num_nodes, num_nodes), np.float32)
  for i, j in links:
    a[j, i] = 1.0
  return a


def _normalize_columns(a):
  """A . D^-1 with D the column degree: every receiver averages its inputs."""
  deg = a.sum(axis=0)
  inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1e-12), 0.0)
  return (a * inv[None, :]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def agcn_spatial_partition():
  """2s-AGCN ``spatial`` graph: (3, 25, 25) = [identity, inward, outward].

  Subsets are column-normalised so each receiving joint averages the joints
  that feed it. ``A[k, v, w] != 0`` means joint v feeds joint w in subset k,
  so a graph convolution is ``out[w] = sum_v x[v] * A[k, v, w]``.
  """
  identity = np.eye(NUM_JOINTS, dtype=np.float32)
  inward = _normalize_columns(_edge_matrix(INWARD))
  outward = _normalize_columns(_edge_matrix(OUTWARD))
  return np.stack([identity, inward, outward])


def bone_list():
  """The 24 undirected bones as 0-based (child, parent) pairs."""
  return INWARD


# ------------------------------------------------- ST-GCN partitions ----

STGCN_STRATEGIES = ('uniform', 'distance', 'spatial')


def _hop_distance(max_hop):
  """ST-GCN ``get_hop_distance``: shortest hop count, ``inf`` beyond max_hop.

  The reference takes matrix powers of the self-looped adjacency up to
  ``max_hop``; growing the reachable set one hop at a time is the same thing.
  """
  link = np.eye(NUM_JOINTS, dtype=np.int64)
  for i, j in INWARD:
    link[i, j] = link[j, i] = 1
  dist = np.full((NUM_JOINTS, NUM_JOINTS), np.inf)
  reach = np.eye(NUM_JOINTS, dtype=np.int64)
  dist[reach > 0] = 0
  for d in range(1, max_hop + 1):
    reach = np.minimum(reach @ link, 1)
    dist[(reach > 0) & np.isinf(dist)] = d
  return dist


@functools.lru_cache(maxsize=None)
def stgcn_partition(strategy='spatial', max_hop=1, corrected=False, dilation=1):
  """ST-GCN ``Graph(layout='ntu-rgb+d', strategy, max_hop, dilation)``.A.

  Returns a read-only float32 array (K, 25, 25) with the orientation used by
  ``out[w] = sum_k sum_v x_k[v] * A[k, v, w]``: row v is the input joint,
  column w the receiving joint. The neighbourhood is every pair at hop
  distance in ``range(0, max_hop + 1, dilation)``, column-normalised over the
  whole neighbourhood (self-loop included) *before* it is split, so the K
  subsets of one column always sum to that column of the ``uniform`` matrix.

  Strategies: ``uniform`` (K = 1); ``distance`` (one subset per valid hop);
  ``spatial`` (hop 0 -> root; every hop > 0 -> [root + centripetal,
  centrifugal], where centripetal means the input is farther from the centre
  joint 21 than the receiver), K = 1 + 2 * max_hop for dilation 1.

  ``corrected=False`` reproduces the reference exactly, artefact included: it
  measures distance to the centre with the same hop matrix truncated at
  ``max_hop``, so with max_hop = 1 only joints 2, 3, 5, 9 (and 21) have a
  finite distance; pairs of far joints compare ``inf == inf`` and fall in the
  root group, which is merged into subset 1. At max_hop = 1 this gives A0 =
  25 diagonal entries, A1 = 40 (32 far-far + 8 centripetal), A2 = 8.

  ``corrected=True`` changes only the distance-to-centre used for the spatial
  split: it is the true shortest-path distance in the skeleton tree (hops up to
  NUM_JOINTS - 1, so every joint is finite). The neighbourhood, its
  normalisation and ``uniform``/``distance`` are unchanged. At max_hop = 1 the
  subsets become self-loops (25), all 24 centripetal entries (child -> parent
  of ``INWARD``) and all 24 centrifugal entries (parent -> child); on a tree no
  neighbour pair is equidistant, so the merged root part of A1 is empty.
  """
  if strategy not in STGCN_STRATEGIES:
    raise ValueError(
      f'strategy={strategy!r}: expected one of {list(STGCN_STRATEGIES)}'
    )
  hop_dis = _hop_distance(max_hop)
  valid_hop = range(0, max_hop + 1, dilation)
  adjacency = np.isin(hop_dis, list(valid_hop)).astype(np.float64)
  norm = _normalize_columns(adjacency).astype(np.float64)

  if strategy == 'uniform':
    subsets = [norm]
  elif strategy == 'distance':
    subsets = [np.where(hop_dis == hop, norm, 0.0) for hop in valid_hop]
  else:
    centre_hops = _hop_distance(NUM_JOINTS - 1) if corrected else hop_dis
    d_in = centre_hops[:, CENTER][:, None]  # row v: the input joint
    d_out = centre_hops[:, CENTER][None, :]  # column w: the receiver
    subsets = []
    for hop in valid_hop:
      at_hop = hop_dis == hop
      # inf == inf is True and inf > inf is False, as in the reference loop.
      root = np.where(at_hop & (d_in == d_out), norm, 0.0)
      close = np.where(at_hop & (d_in > d_out), norm, 0.0)
      further = np.where(at_hop & (d_in < d_out), norm, 0.0)
      if hop == 0:
        subsets.append(root)
      else:
        subsets += [root + close, further]
  a = np.stack(subsets).astype(np.float32)
  a.flags.writeable = False  # cached and shared between callers
  return a
