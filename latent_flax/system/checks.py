"""One-line ValueErrors for bad config fields, shared by every validator."""


def need(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def need_int(field: str, value, least: int = 1, note: str = '') -> None:
  """`field` (as a user writes it: 'config.model.emb_dim') must be an integer >= least;
  `note` follows in the message (' (0 = all)')."""
  need(is_int(value) and value >= least, f"{field}={value!r} must be an integer >= {least}{note}.")
