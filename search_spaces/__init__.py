"""Shipped search spaces (installed as ``autoaug.search_spaces``): ``vlm_default``, ``randaugment``,
``pba_schedule``. Referred to by file name without extension (``--space vlm_default``); see
`autoaug.search.space` for the format."""
