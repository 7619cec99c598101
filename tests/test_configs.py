"""The shipped configs: every argument is applied last, and the parameter matching that
configs/full.py and configs/mla.py claim holds."""

import importlib
import pathlib

import jax
import pytest

import configs
from configs import full, m64, mla
from latent_flax import model as model_lib
from latent_flax.attention import registry

CONFIG_MODULES = sorted(p.stem for p in pathlib.Path(configs.__file__).parent.glob('*.py')
                        if p.stem != '__init__')


@pytest.mark.parametrize('name', CONFIG_MODULES)
def test_the_argument_wins_over_every_field_the_config_sets(name):
  get_config = importlib.import_module(f'configs.{name}').get_config
  default = get_config()
  for kind in registry.names():
    if kind == default.model.attention:
      continue
    config = get_config(f'attn={kind},mlp=77,steps=5,lr=0.25,batch=3')
    assert (config.model.attention, config.model.mlp_dim) == (kind, 77), name
    assert (config.num_train_steps, config.learning_rate, config.per_device_batch_size) == (
        5, 0.25, 3), name


def _num_params(config) -> int:
  model = model_lib.build_model(config.model)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), 'int32'))
  return model_lib.count_params(shapes['params'])


@pytest.mark.parametrize('module', [full, mla], ids=['full', 'mla'])
def test_parameters_match_m64_within_0_05_percent_at_the_closest_mlp_width(module):
  target = _num_params(m64.get_config())
  config = module.get_config()
  assert config.model.attention != m64.get_config().model.attention
  mlp = config.model.mlp_dim
  gap = {w: abs(_num_params(module.get_config(f'mlp={w}')) - target) for w in (mlp - 1, mlp + 1)}
  gap[mlp] = abs(_num_params(config) - target)
  assert gap[mlp] <= 0.0005 * target, (gap[mlp], target)
  assert gap[mlp] == min(gap.values()), gap  # no other MLP width comes closer
