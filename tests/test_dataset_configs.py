"""The training configs for the real datasets run on builds of fixture trees:
NTU-60 pretraining -> PKU-MMD transfer, and BABEL subset localization."""

import json
import os

import fixtures_babel
import fixtures_ntu
import fixtures_pku
import pytest

import configs
from skel_jax import datasets
from skel_jax import main as main_lib

# Module fixtures/caches are shared: keep this file on one xdist worker.
pytestmark = pytest.mark.xdist_group('dataset_configs')


def _build(name, config, manual_dir, data_dir, **kwargs):
  builder = datasets.make_builder(
    name, config, data_dir, num_workers=0, **kwargs
  )
  datasets.build(builder, manual_dir)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def ntu_pretrained(tmp_path_factory, data_dir):
  raw = str(tmp_path_factory.mktemp('ntu_raw'))
  fixtures_ntu.write_good_tree(raw)
  _build('ntu_rgbd', 'ntu60_xsub', raw, data_dir)
  c = configs.load('pretrain_ntu60_xsub', 'smoke')
  c.data.dir = data_dir
  workdir = str(tmp_path_factory.mktemp('pre_ntu'))
  main_lib.run(c, workdir)
  return workdir


def test_ntu_pretraining_runs(ntu_pretrained):
  with open(os.path.join(ntu_pretrained, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == [5, 10]


def test_ntu_to_pkummd_transfer(ntu_pretrained, data_dir, tmp_path):
  raw = str(tmp_path / 'pku_raw')
  fixtures_pku.write_good_tree(raw)
  _build('pku_mmd', 'v1_xsub', raw, data_dir)
  c = configs.load('finetune_pkummd', 'smoke')
  c.data.dir = data_dir
  c.pretrain_workdir = ntu_pretrained
  workdir = str(tmp_path / 'ft')
  result = main_lib.run(c, workdir)
  assert result['split'] == 'test' and result['init'] == 'pretrained'
  assert len(result['class_names']) == 52  # 51 actions + background
  assert 0 <= result['mean'] <= 100


def test_babel_subset_localization(data_dir, tmp_path):
  raw = str(tmp_path / 'babel_raw')
  fixtures_babel.make_tiny_release(raw)
  model = str(fixtures_babel.write_model(tmp_path / 'smplh.pkl'))
  _build('babel', 'subset1', raw, data_dir, smplh_model=model)
  c = configs.load('finetune_babel', 'subset1,smoke')
  c.data.dir = data_dir
  c.init = 'random'
  result = main_lib.run(c, str(tmp_path / 'ft'))
  assert result['class_names'] == [
    'walk',
    'stand',
    'turn',
    'jump',
    'background',
  ]
  assert result['split'] == 'val'
