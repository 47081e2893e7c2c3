"""The integer codes of dtypes, layouts and memory formats in program JSON: torch's own
serializer tables (torch/_export/serde/serialize.py), so that what the FX host writes reads
as what torch.export.save writes."""

from torch._export.serde import serialize as _serialize

DTYPE_CODES = {k: int(v) for k, v in _serialize._TORCH_TO_SERIALIZE_DTYPE.items()}
LAYOUT_CODES = {k: int(v) for k, v in _serialize._TORCH_TO_SERIALIZE_LAYOUT.items()}
MEMORY_FORMAT_CODES = {k: int(v) for k, v in _serialize._TORCH_TO_SERIALIZE_MEMORY_FORMAT.items()}
DTYPES = {int(k): v for k, v in _serialize._SERIALIZE_TO_TORCH_DTYPE.items()}
LAYOUTS = {int(k): v for k, v in _serialize._SERIALIZE_TO_TORCH_LAYOUT.items()}
MEMORY_FORMATS = {int(k): v for k, v in _serialize._SERIALIZE_TO_TORCH_MEMORY_FORMAT.items()}
