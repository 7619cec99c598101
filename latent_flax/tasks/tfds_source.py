"""Local tfds builders and catalog datasets read as ArrayRecord data sources: no TensorFlow.

tfds writes and reads ArrayRecord files without TensorFlow (`as_data_source()`: random
access by index, examples as numpy); TFRecord files need tf.data. The built-in builders
(the stdlib corpus, ListOps) are prepared once as ArrayRecord, into config.data.data_dir
or else tfds/ in the cache directory (nothing under ~/tensorflow_datasets), with one line
of ours and none of tfds's (it would announce a download that does not happen); a catalog
dataset must have been prepared in that format where there is network.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os

from latent_flax.tasks import byte_cache

FILE_FORMAT = 'array_record'


def builtin_data_dir(data_config) -> str:
  """Where a built-in builder is prepared: config.data.data_dir, else tfds/ beside the
  prepared corpora (byte_cache.cache_root)."""
  if data_config.get('data_dir'):
    return os.path.expanduser(data_config.data_dir)
  return os.path.join(byte_cache.cache_root(data_config), 'tfds')


@contextlib.contextmanager
def _quiet():
  """Without tfds's printed download notices and its logged warnings (that a folder it
  is about to write has no dataset_info.json yet)."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    absl_logger.setLevel(level)


def prepared(builder_cls, what: str, data_dir: str, **kwargs):
  """An instance of a local builder in data_dir, prepared once (as ArrayRecord) if it is
  not yet."""
  with _quiet():
    builder = builder_cls(file_format=FILE_FORMAT, data_dir=data_dir, **kwargs)
    ready = builder.is_prepared()
  if not ready:
    import tensorflow_datasets as tfds
    print(f"Preparing {what} into {builder.data_dir} once; later runs reuse it.", flush=True)
    tfds.disable_progress_bar()  # the line above says what happens
    with _quiet():
      builder.download_and_prepare()
  return builder


def examples(builder, split: str) -> list[dict]:
  """Every example of `split`, in the files' order, as dicts of numpy values / bytes."""
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def _how_to_prepare(name: str) -> str:
  return (f"where there is network, run `tfds build {name} --file_format={FILE_FORMAT}` and "
          "set config.data.data_dir")


def catalog_builder(name: str, data_dir: str | None):
  """The builder of a catalog dataset, or one line naming the dataset that does not exist
  (whether it is prepared, and as ArrayRecord, is catalog_source's question)."""
  import tensorflow_datasets as tfds
  if name not in tfds.list_builders(with_community_datasets=False):
    raise ValueError(f"config.data.name='tfds:{name}': no tfds dataset named {name!r}; "
                     "see `tfds.list_builders()` (e.g. 'tfds:tiny_shakespeare').")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for "not prepared here".
    raise ValueError(f"tfds dataset {name!r} is not prepared here ({type(e).__name__}): "
                     f"{_how_to_prepare(name)}.") from None
  return builder


def catalog_source(builder, split: str):
  """The random-access data source of a catalog split (len, [i] -> example dict), or one
  line saying how to prepare it here."""
  try:
    return builder.as_data_source(split=split)
  except Exception as e:  # tfds raises several types for "not prepared here".
    file_format = getattr(builder.info.file_format, 'value', builder.info.file_format)
    why = (f"is {file_format}, which needs TensorFlow to read" if builder.is_prepared()
           and file_format != FILE_FORMAT else
           f"is not prepared and this machine cannot download ({type(e).__name__})")
    raise ValueError(f"tfds dataset {builder.name!r} split {split!r} in {builder.data_dir!r} "
                     f"{why}: {_how_to_prepare(builder.name)}.") from None
