"""The NTU 25-joint graph and its 2s-AGCN spatial partition, checked from scratch."""

import numpy as np

from skel_jax import graph

# Kinect v2 bones written independently as 1-based (joint, towards-centre
# neighbour) pairs, from the NTU RGB+D joint chart.
_BONES_1BASED = {
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
}


def _raw(links):
  """2s-AGCN edge2mat: link (i, j) sets A[j, i] = 1."""
  a = np.zeros((25, 25))
  for i, j in links:
    a[j, i] = 1.0
  return a


def _col_normalise(a):
  deg = a.sum(0)
  return np.divide(a, deg[None, :], out=np.zeros_like(a), where=deg > 0)


def test_partition_shape_and_identity():
  a = graph.agcn_spatial_partition()
  assert a.shape == (3, 25, 25)
  np.testing.assert_array_equal(a[0], np.eye(25))


def test_bones_match_ntu_chart():
  bones = {(i + 1, j + 1) for i, j in graph.INWARD}
  assert bones == _BONES_1BASED
  assert len(graph.INWARD) == 24
  assert set(graph.OUTWARD) == {(j, i) for i, j in graph.INWARD}
  assert graph.bone_list() == graph.INWARD


def test_inward_outward_follow_edge2mat_and_column_normalisation():
  a = graph.agcn_spatial_partition()
  inward = [(i - 1, j - 1) for i, j in _BONES_1BASED]
  outward = [(j, i) for i, j in inward]
  np.testing.assert_allclose(a[1], _col_normalise(_raw(inward)), atol=1e-7)
  np.testing.assert_allclose(a[2], _col_normalise(_raw(outward)), atol=1e-7)
  for k in (1, 2):
    assert np.count_nonzero(a[k]) == 24
    col = a[k].sum(0)
    nz = col != 0
    np.testing.assert_allclose(col[nz], 1.0, rtol=1e-6)
    # Entries are 1/deg: all positive and at most 1.
    assert (a[k] >= 0).all() and a[k].max() <= 1.0


def test_orientation_child_receives_from_parent():
  # Inward link (child=left_elbow 5, parent=left_shoulder 4) sets A[4, 5]:
  # column 5 (the child) reads from row 4 (the parent).
  a = graph.agcn_spatial_partition()
  assert a[1, 4, 5] == 1.0 and a[1, 5, 4] == 0.0
  # The centre (spine_shoulder, 1-based 21) is the parent of 1-based joints
  # 2, 3, 5, 9; in the outward subset it reads from those 4 (0-based 1, 2, 4, 8).
  fed_by = np.nonzero(a[2][:, graph.CENTER])[0]
  np.testing.assert_array_equal(fed_by, [1, 2, 4, 8])
  np.testing.assert_allclose(a[2][fed_by, graph.CENTER], 0.25)


def test_raw_inward_outward_are_transposes():
  np.testing.assert_array_equal(_raw(graph.INWARD), _raw(graph.OUTWARD).T)
  # The normalised subsets share the transposed sparsity pattern.
  a = graph.agcn_spatial_partition()
  np.testing.assert_array_equal(a[1] != 0, (a[2] != 0).T)


def test_graph_is_spanning_tree():
  adj = {v: set() for v in range(25)}
  for i, j in graph.INWARD:
    assert i != j
    adj[i].add(j)
    adj[j].add(i)
  # 24 distinct undirected edges on 25 nodes + connected == tree.
  assert len({frozenset(e) for e in graph.INWARD}) == 24
  seen, stack = {graph.CENTER}, [graph.CENTER]
  while stack:
    for w in adj[stack.pop()] - seen:
      seen.add(w)
      stack.append(w)
  assert seen == set(range(25))
  # Every joint except the centre has exactly one parent (inward is child ->
  # parent), so inward edges form a tree rooted at the centre.
  children = [i for i, _ in graph.INWARD]
  assert sorted(children) == sorted(set(range(25)) - {graph.CENTER})


def test_flip_permutation_is_involution_mapping_left_to_right():
  p = np.asarray(graph.FLIP_PERMUTATION)
  assert sorted(p) == list(range(25))
  np.testing.assert_array_equal(p[p], np.arange(25))
  names = graph.JOINT_NAMES
  assert len(names) == 25
  for i, name in enumerate(names):
    if name.startswith('left_'):
      assert names[p[i]] == 'right_' + name[len('left_') :]
    elif name.startswith('right_'):
      assert names[p[i]] == 'left_' + name[len('right_') :]
    else:
      assert p[i] == i, name
