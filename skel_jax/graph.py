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
    'spine_base', 'spine_mid', 'neck', 'head',
    'left_shoulder', 'left_elbow', 'left_wrist', 'left_hand',
    'right_shoulder', 'right_elbow', 'right_wrist', 'right_hand',
    'left_hip', 'left_knee', 'left_ankle', 'left_foot',
    'right_hip', 'right_knee', 'right_ankle', 'right_foot',
    'spine_shoulder', 'left_hand_tip', 'left_thumb', 'right_hand_tip',
    'right_thumb',
)

# 1-based (child, parent) pairs exactly as listed by ST-GCN / 2s-AGCN.
_INWARD_1BASED = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7),
    (9, 21), (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14),
    (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23), (23, 8),
    (24, 25), (25, 12),
)
INWARD = tuple((a - 1, b - 1) for a, b in _INWARD_1BASED)
OUTWARD = tuple((b, a) for a, b in INWARD)

# Left/right mirror permutation (AimCLR ``transform_order['ntu']``).
FLIP_PERMUTATION = (0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19,
                    12, 13, 14, 15, 20, 23, 24, 21, 22)


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
