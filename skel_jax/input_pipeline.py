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

from skel_jax import preprocess


# ---------------------------------------------------------------------------
# Dataset location and build.
# ---------------------------------------------------------------------------
def builder_for(data_cfg):
  """The TFDS builder named by ``data.name`` / ``data.config`` (registry in datasets)."""
  from skel_jax import datasets  # local import: keeps builders optional

  return datasets.make_builder(
    data_cfg.name, data_cfg.config, data_dir=data_cfg.dir
  )


def build_command(data_cfg, manual=True):
  """The build_data command line that creates this dataset."""
  cmd = (
    f'python -m skel_jax.build_data --dataset={data_cfg.name}/'
    f'{data_cfg.config} --data_dir={data_cfg.dir}'
  )
  if manual:
    cmd += ' --manual_dir=<folder with the raw downloaded files>'
  if data_cfg.name == 'babel':
    cmd += ' --builder_option=smplh_model=<SMPL-H model .pkl>'
  return cmd


def ensure_built(data_cfg):
  """Builds the dataset once (cached under ``data.dir``); returns its info.

  Datasets converted from raw downloads cannot be built here (their files
  are the user's): a missing one is a ``ConfigError`` giving the command.
  """
  from skel_jax import config_validation  # pylint: disable=g-import-not-at-top

  builder = builder_for(data_cfg)
  if not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json')):
    manual = bool(builder.MANUAL_DOWNLOAD_INSTRUCTIONS)
    if manual or not data_cfg.get('build_if_missing', True):
      raise config_validation.ConfigError(
        f'config.data.dir={data_cfg.dir!r}: dataset {data_cfg.name}/'
        f'{data_cfg.config} not found ({builder.data_dir}); build it first: '
        + build_command(data_cfg, manual)
        + (f' (see data_builders/{data_cfg.name}/README.md)' if manual else '')
      )
    from skel_jax import datasets

    datasets.build(builder)
  return builder.info


def _fail(key, value, expected):
  from skel_jax import config_validation  # pylint: disable=g-import-not-at-top

  raise config_validation.ConfigError(f'config.{key}={value!r}: {expected}')


def split_stats(data_cfg, info, split, indices=None):
  """{num_examples, max_frames, longest} of a split (or of its ``indices``):
  from the metadata recorded at build time, else by reading every example's
  length once (datasets built before that record existed)."""
  recorded = (info.metadata or {}).get('split_stats', {}).get(split)
  if recorded is not None and indices is None:
    return recorded
  source = open_split(data_cfg, split)
  order = range(len(source)) if indices is None else indices
  longest, longest_id = -1, None
  for i in order:
    ex = source[int(i)]
    t = int(ex['num_frames']) if 'num_frames' in ex else len(ex['labels'])
    if t > longest:
      sid = ex.get('sequence_id', str(i))
      longest, longest_id = t, sid.decode() if isinstance(sid, bytes) else sid
  return {
    'num_examples': len(order),
    'max_frames': longest,
    'longest': longest_id,
  }


def check_localization_data(config, info):
  """Everything about the data that would fail a localization run later,
  checked before anything compiles: the splits exist and hold labelled
  sequences, and no sequence that is padded whole exceeds data.pad_length."""
  data = config.data
  splits = dict(info.splits)
  for key in ('train_split', 'eval_split'):
    split = data[key]
    if split not in splits:
      _fail(
        f'data.{key}',
        split,
        f'{data.name}/{data.config} has the splits {sorted(splits)}',
      )
    if not splits[split].num_examples:
      _fail(f'data.{key}', split, 'this split holds no sequence')
  if 'labels' not in info.features.keys():
    _fail(
      'data.name',
      data.name,
      f'{data.name}/{data.config} has no per-frame labels to localize',
    )
  n_train = splits[data.train_split].num_examples
  labeled = labeled_subset(n_train, config.label_fraction, config.seed)
  if not len(labeled):
    _fail(
      'label_fraction',
      config.label_fraction,
      f'leaves no labelled sequence of the {n_train} in {data.train_split!r}',
    )
  pad = data.pad_length
  # Eval sequences are always padded whole; training ones unless cropped to
  # data.train_window (the KNN bank embeds whole labelled sequences).
  whole = [(data.eval_split, None)]
  if not data.train_window or config.get('protocol') == 'knn':
    whole.append((data.train_split, labeled))
  for split, indices in whole:
    stats = split_stats(data, info, split)
    if (
      stats['max_frames'] > pad
      and indices is not None
      and (len(indices) < stats['num_examples'])
    ):
      stats = split_stats(data, info, split, indices)  # the labelled ones
    if stats['max_frames'] > pad:
      crop = (
        ' or train on crops with --config.data.train_window'
        if split == data.train_split
        else ''
      )
      _fail(
        'data.pad_length',
        pad,
        f'split {split!r} has a {stats["max_frames"]}-frame sequence '
        f'({stats["longest"]}); set --config.data.pad_length='
        f'{stats["max_frames"]} or more{crop}',
      )
  return labeled


def open_split(data_cfg, split):
  builder = builder_for(data_cfg)
  return builder.as_data_source(split=split)


def class_names(data_cfg):
  return list(builder_for(data_cfg).info.metadata['class_names'])


# ---------------------------------------------------------------------------
# Per-sequence preprocessing (NumPy, host side).
# ---------------------------------------------------------------------------
# data.preprocess (preprocess.CONFIG_FAMILIES): 'plain' (localization
# default: translation only, applied per pretraining window), 'aimclr'
# (frame50, family A), 'aimclr_raw' (A1 only: first two bodies, 300 frames,
# as recorded), 'agcn' (family B).


def to_model_layout(skeleton):
  """Stored (T, M, V, 3) -> model (M, T, V, 3), float32."""
  return np.ascontiguousarray(
    np.transpose(skeleton, (1, 0, 2, 3)), dtype=np.float32
  )


def fit_persons(x, num_persons):
  """Pads (zeros = absent) or truncates the person axis to ``num_persons``."""
  m = x.shape[0]
  if m == num_persons:
    return x
  if m > num_persons:
    return x[:num_persons]
  pad = np.zeros((num_persons - m,) + x.shape[1:], x.dtype)
  return np.concatenate([x, pad], axis=0)


def example_to_array(ex, data_cfg):
  """One stored example -> (M, T, V, 3) under ``data.preprocess``.

  Dense datasets (synthetic, PKU-MMD, BABEL) store ``skeleton``; NTU RGB+D
  stores raw body records, from which each family selects its bodies. The
  'plain' translation is applied later (per window / per sequence).
  """
  family = data_cfg.preprocess
  if 'skeleton' in ex:
    x = to_model_layout(ex['skeleton'])
    if family in ('aimclr', 'agcn'):
      x = preprocess.preprocess(x, family)
  elif family == 'plain':
    x = to_model_layout(preprocess.to_dense(ex, data_cfg.num_persons))
  elif family == 'aimclr_raw':
    x = preprocess.aimclr_select_bodies(ex)
  else:
    x = preprocess.preprocess(ex, family)
  return fit_persons(np.asarray(x, np.float32), data_cfg.num_persons)


def normalize(x, data_cfg):
  return preprocess.normalize_plain(x) if data_cfg.preprocess == 'plain' else x


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
  return x[:, start : start + length]


# ---------------------------------------------------------------------------
# Batches of global indices, loaded per process.
# ---------------------------------------------------------------------------
def process_rows(global_batch):
  """The rows of each global batch that this process loads (multi-host input)."""
  n, pid = jax.process_count(), jax.process_index()
  if global_batch % n:
    raise ValueError(
      f'batch_size={global_batch} must be divisible by the process count {n}'
    )
  local = global_batch // n
  return slice(pid * local, (pid + 1) * local)


def _tag(index, record):
  return {'index': np.int64(index), 'record': np.int64(record)}


def _index_batches(num_records, global_batch, seed):
  """Infinite MapDataset: element s = {index, record} arrays of step s's batch."""
  return (
    grain.MapDataset.range(num_records)
    .shuffle(seed=seed)
    .repeat()
    .map_with_index(_tag)
    .batch(global_batch, drop_remainder=True)
  )


# ---------------------------------------------------------------------------
# Pretraining: fixed-length windows of unlabeled sequences.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _PretrainBatch:
  source: object
  data_cfg: object
  seed: int
  rows: slice

  def __call__(self, tags):
    xs = []
    index = tags['index'][self.rows]
    for i, r in zip(index, tags['record'][self.rows]):
      x = example_to_array(self.source[int(r)], self.data_cfg)
      rng = np.random.default_rng([self.seed, int(i)])
      xs.append(
        normalize(random_window(x, self.data_cfg.clip_len, rng), self.data_cfg)
      )
    return {'x': np.stack(xs), 'index': (index % (2**31 - 1)).astype(np.int32)}


def pretrain_dataset(data_cfg, split, *, global_batch, seed):
  """Infinite MapDataset: element s = this process's rows of step s's batch."""
  source = open_split(data_cfg, split)
  ds = _index_batches(len(source), global_batch, seed).map(
    _PretrainBatch(source, data_cfg, seed, process_rows(global_batch))
  )
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


def pad_sequence(ex, data_cfg, pad_length, rng=None, ignore_label=-1):
  """One labeled example -> fixed ``pad_length`` frames, padded labels -1.

  With ``rng`` and a sequence longer than ``pad_length`` (training on
  ``data.train_window`` crops), a random window is taken; otherwise a longer
  sequence is an error naming it.
  """
  x = example_to_array(ex, data_cfg)
  labels = np.asarray(ex['labels'], np.int32) if 'labels' in ex else None
  t = x.shape[1]
  if t > pad_length:
    if rng is None:
      raise ValueError(
        f'sequence {ex.get("sequence_id", b"?")!r} has {t} frames, more '
        f'than data.pad_length={pad_length}; raise data.pad_length'
      )
    start = int(rng.integers(0, t - pad_length + 1))
    x = x[:, start : start + pad_length]
    labels = None if labels is None else labels[start : start + pad_length]
    t = pad_length
  x = normalize(x, data_cfg)
  xp = np.zeros((x.shape[0], pad_length) + x.shape[2:], np.float32)
  xp[:, :t] = x
  out_labels = np.full((pad_length,), ignore_label, np.int32)
  if labels is not None:
    out_labels[:t] = labels[:t]
  return {'x': xp, 'labels': out_labels, 'length': np.int32(t)}


@dataclasses.dataclass(frozen=True)
class _LabeledBatch:
  source: object
  indices: np.ndarray
  data_cfg: object
  seed: int
  rows: slice

  def __call__(self, tags):
    window = self.data_cfg.train_window
    items = []
    for i, r in zip(tags['index'][self.rows], tags['record'][self.rows]):
      ex = self.source[int(self.indices[r])]
      if window:
        rng = np.random.default_rng([self.seed, int(i)])
        items.append(pad_sequence(ex, self.data_cfg, window, rng))
      else:
        items.append(pad_sequence(ex, self.data_cfg, self.data_cfg.pad_length))
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def finetune_dataset(data_cfg, split, *, global_batch, label_fraction, seed):
  """Infinite shuffled MapDataset of padded labeled batches (element s = step s).

  Whole sequences padded to ``data.pad_length`` (the released protocol), or
  random ``data.train_window``-frame crops for datasets of long videos.
  """
  source = open_split(data_cfg, split)
  indices = labeled_subset(len(source), label_fraction, seed)
  ds = _index_batches(len(indices), global_batch, seed).map(
    _LabeledBatch(source, indices, data_cfg, seed, process_rows(global_batch))
  )
  return ds, indices


def eval_batches(data_cfg, split, *, global_batch, limit=None, indices=None):
  """Yields padded batches over a split (or its ``indices``) in order; the
  last batch is filled with copies marked ``valid=False`` so every batch has a
  fixed shape."""
  source = open_split(data_cfg, split)
  order = list(range(len(source))) if indices is None else list(indices)
  if limit is not None:
    order = order[:limit]
  n = len(order)
  for start in range(0, n, global_batch):
    idx = order[start : start + global_batch]
    valid = np.array([True] * len(idx) + [False] * (global_batch - len(idx)))
    idx += [idx[-1]] * (global_batch - len(idx))
    examples = [source[int(i)] for i in idx]
    batch = [pad_sequence(ex, data_cfg, data_cfg.pad_length) for ex in examples]
    out = {k: np.stack([b[k] for b in batch]) for k in batch[0]}
    out['valid'] = valid
    out['sequence_id'] = [ex['sequence_id'] for ex in examples]
    yield out


def iterate(ds, start_step, num_threads=4, prefetch=8):
  """Prefetching iterator over batches ``start_step, start_step + 1, ...``."""
  opts = grain.ReadOptions(
    num_threads=num_threads, prefetch_buffer_size=prefetch
  )
  return iter(ds[start_step:].to_iter_dataset(opts))


def host_to_global(batch, sharding):
  """Process-local NumPy batch -> global jax.Array sharded on the data axis."""
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, x), batch
  )


def global_eval_input(x, sharding):
  """An eval batch every process holds in full -> a global sharded array
  (each process contributes its rows, as in training)."""
  return host_to_global(x[process_rows(x.shape[0])], sharding)


def gather_to_host(x):
  """A global array -> the full NumPy array on every process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))
