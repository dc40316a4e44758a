"""Input pipelines: TFDS array_record sources read with grain, no TensorFlow.

Every random choice on the host (shuffle order, pretraining windows) is a pure
function of (seed, global sample index), and batch ``s`` is simply element
``s`` of a grain ``MapDataset``. Resuming at step s therefore replays exactly
the data an uninterrupted run would have seen, on any number of devices.
"""
import dataclasses
import os

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

SPINE_MID = 1  # joint 2: the centre used by the "plain" normalisation


# ---------------------------------------------------------------------------
# Dataset location and build.
# ---------------------------------------------------------------------------
def builder_for(data_cfg):
  """The TFDS builder named by ``data.name`` / ``data.config`` (registry in build_data)."""
  from skel_jax import build_data  # local import: keeps builders optional
  return build_data.make_builder(data_cfg.name, data_cfg.config,
                                 data_dir=data_cfg.dir)


def ensure_built(data_cfg):
  """Builds the dataset once (cached under ``data.dir``); returns its info."""
  builder = builder_for(data_cfg)
  if not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json')):
    if not data_cfg.get('build_if_missing', True):
      raise FileNotFoundError(
          f'Dataset {data_cfg.name}/{data_cfg.config} not found under '
          f'{data_cfg.dir}; build it with python -m skel_jax.build_data')
    from skel_jax import build_data
    build_data.build(builder)
  return builder.info


def open_split(data_cfg, split):
  builder = builder_for(data_cfg)
  return builder.as_data_source(split=split)


def class_names(data_cfg):
  return list(builder_for(data_cfg).info.metadata['class_names'])


# ---------------------------------------------------------------------------
# Per-sequence preprocessing (NumPy, host side).
# ---------------------------------------------------------------------------
def to_model_layout(skeleton):
  """Stored (T, M, V, 3) -> model (M, T, V, 3), float32."""
  return np.ascontiguousarray(np.transpose(skeleton, (1, 0, 2, 3)),
                              dtype=np.float32)


def normalize_plain(x):
  """Plain localization normalisation: translate so that person 0's spine
  centre at the first frame is the origin. Root motion (walking, jumping) is
  kept, unlike per-frame centring. Absent persons (all-zero) stay zero."""
  origin = x[0, 0, SPINE_MID]
  present = np.any(x != 0, axis=(2, 3), keepdims=True)
  return np.where(present, x - origin, 0.0).astype(np.float32)


def loop_pad(x, length):
  """Repeat frames cyclically up to ``length`` (2s-AGCN style padding)."""
  t = x.shape[1]
  if t >= length:
    return x
  idx = np.arange(length) % t
  return x[:, idx]


def random_window(x, length, rng):
  x = loop_pad(x, length)
  start = rng.integers(0, x.shape[1] - length + 1)
  return x[:, start:start + length]


# ---------------------------------------------------------------------------
# Batches of global indices, loaded per process.
# ---------------------------------------------------------------------------
def process_rows(global_batch):
  """The rows of each global batch that this process loads (multi-host input)."""
  n, pid = jax.process_count(), jax.process_index()
  if global_batch % n:
    raise ValueError(f'batch_size={global_batch} must be divisible by the '
                     f'process count {n}')
  local = global_batch // n
  return slice(pid * local, (pid + 1) * local)


def _tag(index, record):
  return {'index': np.int64(index), 'record': np.int64(record)}


def _index_batches(num_records, global_batch, seed):
  """Infinite MapDataset: element s = {index, record} arrays of step s's batch."""
  return (grain.MapDataset.range(num_records).shuffle(seed=seed).repeat()
          .map_with_index(_tag).batch(global_batch, drop_remainder=True))


# ---------------------------------------------------------------------------
# Pretraining: fixed-length windows of unlabeled sequences.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _PretrainBatch:
  source: object
  clip_len: int
  seed: int
  rows: slice

  def __call__(self, tags):
    xs = []
    index = tags['index'][self.rows]
    for i, r in zip(index, tags['record'][self.rows]):
      ex = self.source[int(r)]
      rng = np.random.default_rng([self.seed, int(i)])
      xs.append(normalize_plain(
          random_window(to_model_layout(ex['skeleton']), self.clip_len, rng)))
    return {'x': np.stack(xs), 'index': (index % (2**31 - 1)).astype(np.int32)}


def pretrain_dataset(data_cfg, split, *, clip_len, global_batch, seed):
  """Infinite MapDataset: element s = this process's rows of step s's batch."""
  source = open_split(data_cfg, split)
  ds = _index_batches(len(source), global_batch, seed).map(
      _PretrainBatch(source, clip_len, seed, process_rows(global_batch)))
  return ds, len(source)


# ---------------------------------------------------------------------------
# Localization: whole sequences padded to a fixed length, per-frame labels.
# ---------------------------------------------------------------------------
def labeled_subset(num_examples, fraction, seed):
  """Seeded random subset of sequence indices (the semi-supervised protocol)."""
  if fraction >= 1.0:
    return np.arange(num_examples)
  n_keep = max(1, int(round(fraction * num_examples)))
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_examples, n_keep, replace=False))


def pad_sequence(ex, pad_length, ignore_label=-1):
  """Pads one example to ``pad_length`` frames; padded frames get label -1."""
  x = normalize_plain(to_model_layout(ex['skeleton']))
  t = x.shape[1]
  if t > pad_length:
    raise ValueError(
        f'sequence {ex.get("sequence_id", b"?")!r} has {t} frames, more than '
        f'data.pad_length={pad_length}; raise data.pad_length')
  xp = np.zeros((x.shape[0], pad_length) + x.shape[2:], np.float32)
  xp[:, :t] = x
  labels = np.full((pad_length,), ignore_label, np.int32)
  if 'labels' in ex:
    labels[:t] = ex['labels']
  return {'x': xp, 'labels': labels, 'length': np.int32(t)}


@dataclasses.dataclass(frozen=True)
class _LabeledBatch:
  source: object
  indices: np.ndarray
  pad_length: int
  rows: slice

  def __call__(self, tags):
    items = [pad_sequence(self.source[int(self.indices[r])], self.pad_length)
             for r in tags['record'][self.rows]]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def finetune_dataset(data_cfg, split, *, global_batch, label_fraction, seed):
  """Infinite shuffled MapDataset of padded labeled batches (element s = step s)."""
  source = open_split(data_cfg, split)
  indices = labeled_subset(len(source), label_fraction, seed)
  ds = _index_batches(len(indices), global_batch, seed).map(
      _LabeledBatch(source, indices, data_cfg.pad_length,
                    process_rows(global_batch)))
  return ds, indices


def eval_batches(data_cfg, split, *, global_batch, limit=None):
  """Yields padded batches over a whole split in order; the last batch is
  filled with copies marked ``valid=False`` so every batch has a fixed shape."""
  source = open_split(data_cfg, split)
  n = len(source) if limit is None else min(limit, len(source))
  for start in range(0, n, global_batch):
    idx = list(range(start, min(start + global_batch, n)))
    valid = np.array([True] * len(idx) + [False] * (global_batch - len(idx)))
    idx += [idx[-1]] * (global_batch - len(idx))
    examples = [source[i] for i in idx]
    batch = [pad_sequence(ex, data_cfg.pad_length) for ex in examples]
    out = {k: np.stack([b[k] for b in batch]) for k in batch[0]}
    out['valid'] = valid
    out['sequence_id'] = [ex['sequence_id'] for ex in examples]
    yield out


def iterate(ds, start_step, num_threads=4, prefetch=8):
  """Prefetching iterator over batches ``start_step, start_step + 1, ...``."""
  opts = grain.ReadOptions(num_threads=num_threads,
                           prefetch_buffer_size=prefetch)
  return iter(ds[start_step:].to_iter_dataset(opts))


def host_to_global(batch, sharding):
  """Process-local NumPy batch -> global jax.Array sharded on the data axis."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
