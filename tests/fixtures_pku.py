"""Writes small PKU-MMD phase-1 raw trees in the documented formats.

Formats follow docs/data_and_eval.md §2: skeleton lines of 150 ``%f`` numbers
separated by single spaces (later lines may start with one space), label
lines ``label,start,end,confidence`` and the 4-line split files with trailing
commas and the 'Validataion' typo. Writers return what they wrote so tests
compare parsed values with the written text, not with the generator.
"""

import os

import numpy as np

NUM_VALUES = 150

# Layouts seen in the wild (docs/data_and_eval.md §2.1).
LAYOUTS = {
  'renew': dict(
    skeleton_dir='PKU_Skeleton_Renew',
    skeleton_ext='.txt',
    label_dir='Train_Label_PKU_final',
    label_ext='.txt',
    xsub='Split/cross-subject.txt',
    xview='Split/cross-view.txt',
  ),
  'data': dict(
    skeleton_dir='Data/SKELETON_VIDEO',
    skeleton_ext='.skeleton',
    label_dir='Label',
    label_ext='.label',
    xsub='cross_subject.txt',
    xview='cross_view.txt',
  ),
}

# Good tree. '0003-L' is absent everywhere, like the real 0060-L.
# Each entry: frames, persons present, all-zero frames, extra columns,
# newline, and the label file text exactly as written.
GOOD_VIDEOS = {
  # Comma labels, one person (the second is 75 zeros), 3 empty frames.
  '0002-L': dict(
    frames=24, persons=1, zero_frames=(3, 4, 5), labels='3,0,10,1\n7,10,20,2\n'
  ),
  # 175 columns (appendix data after the 150 we use), whitespace labels.
  '0002-M': dict(
    frames=15, persons=2, extra_columns=25, labels='51 2 8 1\n1  8 12 2\n'
  ),
  # start > end on line 1.
  '0002-R': dict(frames=20, persons=1, labels='5,20,10,1\n2,0,4,1\n'),
  # Overlap (frames 5..9) and a segment running past the last frame.
  '0003-M': dict(
    frames=20, persons=2, labels='1,0,10,1\n2,5,15,2\n4,18,30,1\n'
  ),
  # CRLF files, trailing commas on label lines, two segments with one start.
  '0003-R': dict(
    frames=16, persons=2, newline='\r\n', labels='12,3,9,2,\r\n20,3,6,1,\r\n'
  ),
  '0291-L': dict(frames=12, persons=1, labels='8,1,5,1\n'),
  # A blank line between segments.
  '0291-M': dict(frames=13, persons=2, labels='9,2,6,2\n\n10,6,13,1\n'),
  '0291-R': dict(frames=11, persons=1, zero_frames=(0,), labels='11,0,11,1'),
}
GOOD_SPLITS = {
  'xsub': {
    'train': ['0002-L', '0002-M', '0002-R', '0003-M', '0003-R'],
    'test': ['0291-L', '0291-M', '0291-R'],
  },
  # Middle + right views train, left tests (the recollection in §2.4).
  'xview': {
    'train': ['0002-M', '0002-R', '0003-M', '0003-R', '0291-M', '0291-R'],
    'test': ['0002-L', '0291-L'],
  },
}


def write_split_file(path, train, test, *, real_style=True):
  """The 4-line split format.

  ``real_style`` copies the shipped cross-subject file: the test line ends
  in ',' with no newline; otherwise both lists end in ', ' plus a newline.
  """
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  train_line = ''.join(f'{v}, ' for v in train)
  if real_style:
    test_line = ', '.join(test) + ','
  else:
    test_line = ''.join(f'{v}, ' for v in test) + '\n'
  with open(path, 'w', newline='') as f:
    f.write(
      f'Training videos: \n{train_line}\nValidataion videos: \n{test_line}'
    )


def format_value(v):
  return f'{v:f}'


def write_skeleton(path, values, *, extra_columns=0, newline='\n', rng=None):
  """Writes (T, 150) values as %f text; returns the written (T, 2, 25, 3).

  Lines after the first start with one space, as in the real files. Extra
  columns (non-zero, to be ignored by the parser) follow the 150 values.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = rng or np.random.default_rng(0)
  lines = []
  for t, row in enumerate(values):
    tokens = [format_value(v) for v in row]
    tokens += [format_value(v) for v in rng.uniform(1, 2, extra_columns)]
    lines.append((' ' if t else '') + ' '.join(tokens))
  with open(path, 'w', newline='') as f:
    f.write(newline.join(lines) + newline)
  written = np.array([[float(format_value(v)) for v in row] for row in values])
  return written.astype(np.float32).reshape(-1, 2, 25, 3)


def write_text(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:
    f.write(text)


def random_frames(rng, frames, persons=1, zero_frames=()):
  """Kinect-like values; an absent second person is 75 zeros."""
  values = rng.uniform(-1.5, 3.5, (frames, NUM_VALUES))
  if persons == 1:
    values[:, 75:] = 0.0
  values[list(zero_frames)] = 0.0  # frames without any skeleton
  return values


def write_good_tree(root, layout='renew', seed=0):
  """Writes the good tree in ``layout``.

  Returns:
    ``{video_id: dict(skeleton, labels_text, skeleton_path, label_path)}``
    with the skeleton values as written (float32 (T, 2, 25, 3)).
  """
  lay = LAYOUTS[layout]
  rng = np.random.default_rng(seed)
  out = {}
  for vid, spec in GOOD_VIDEOS.items():
    skel_path = os.path.join(
      root, lay['skeleton_dir'], vid + lay['skeleton_ext']
    )
    label_path = os.path.join(root, lay['label_dir'], vid + lay['label_ext'])
    values = random_frames(
      rng, spec['frames'], spec['persons'], spec.get('zero_frames', ())
    )
    skeleton = write_skeleton(
      skel_path,
      values,
      extra_columns=spec.get('extra_columns', 0),
      newline=spec.get('newline', '\n'),
      rng=rng,
    )
    write_text(label_path, spec['labels'])
    out[vid] = dict(
      skeleton=skeleton,
      labels_text=spec['labels'],
      skeleton_path=skel_path,
      label_path=label_path,
    )
  write_split_file(os.path.join(root, lay['xsub']), **GOOD_SPLITS['xsub'])
  write_split_file(
    os.path.join(root, lay['xview']), **GOOD_SPLITS['xview'], real_style=False
  )
  return out


# Bad tree (renew layout, cross-subject only). For each video: what the
# lenient build does ('keep' / 'skip') and, for strict errors, the file
# (relative to the tree), the 1-based line (None: whole file) and a piece of
# the expectation.
SKEL = 'PKU_Skeleton_Renew/{}.txt'
LABEL = 'Train_Label_PKU_final/{}.txt'
SPLIT = 'Split/cross-subject.txt'
BAD_VIDEOS = {
  '0010-L': ('keep', None, None, None),
  '0010-M': ('skip', SKEL, 4, 'at least 150'),  # 149 values on line 4
  '0010-R': ('skip', SKEL, 2, 'a number'),  # 'abc' on line 2
  '0011-L': ('skip', SKEL, 3, 'finite'),  # nan on line 3
  '0011-M': ('skip', SKEL, 5, 'finite'),  # inf on line 5
  '0011-R': ('skip', SKEL, None, 'at least one frame'),  # empty file
  '0012-L': ('skip', SPLIT, 2, 'a label file'),  # label file missing
  '0012-M': ('keep', LABEL, 2, 'start <= end'),  # swapped when lenient
  '0012-R': ('skip', LABEL, 2, 'class label in 1..51'),  # label 52
  '0013-L': ('skip', SPLIT, 2, 'a skeleton file'),  # skeleton missing
  '0013-M': ('skip', LABEL, 1, '4 integers'),  # 3 fields
  '0013-R': ('skip', LABEL, 2, 'integer fields'),  # '7.5'
  '0291-L': ('keep', None, None, None),
  '0291-M': ('skip', LABEL, 1, 'class label in 1..51'),  # label 0
  '0291-R': ('keep', None, None, None),  # empty label file: background
}
BAD_SPLITS = {
  'train': [v for v in BAD_VIDEOS if not v.startswith('0291')],
  'test': [v for v in BAD_VIDEOS if v.startswith('0291')],
}


def write_bad_tree(root, seed=1):
  """Writes the bad-input tree described by ``BAD_VIDEOS``."""
  rng = np.random.default_rng(seed)

  def skeleton_lines(frames=8):
    values = random_frames(rng, frames)
    return [' '.join(format_value(v) for v in row) for row in values]

  skel = {vid: skeleton_lines() for vid in BAD_VIDEOS}
  skel['0010-M'][3] = ' '.join(skel['0010-M'][3].split()[:149])
  tokens = skel['0010-R'][1].split()
  skel['0010-R'][1] = ' '.join(tokens[:7] + ['abc'] + tokens[8:])
  skel['0011-L'][2] = ' '.join(['nan'] + skel['0011-L'][2].split()[1:])
  skel['0011-M'][4] = ' '.join(skel['0011-M'][4].split()[:-1] + ['inf'])
  skel['0011-R'] = []
  del skel['0013-L']
  for vid, lines in skel.items():
    write_text(
      os.path.join(root, SKEL.format(vid)),
      '\n'.join(lines) + ('\n' if lines else ''),
    )

  labels = {vid: '1,0,4,1\n2,4,8,2\n' for vid in BAD_VIDEOS}
  labels['0012-M'] = '1,0,4,1\n2,8,4,2\n'
  labels['0012-R'] = '1,0,4,1\n52,4,8,2\n'
  labels['0013-M'] = '1,0,4\n'
  labels['0013-R'] = '1,0,4,1\n2,4,7.5,2\n'
  labels['0291-M'] = '0,0,4,1\n'
  labels['0291-R'] = ''
  del labels['0012-L']
  for vid, text in labels.items():
    write_text(os.path.join(root, LABEL.format(vid)), text)
  write_split_file(os.path.join(root, SPLIT), **BAD_SPLITS)
