"""Checks of the safetensors framing (header length, JSON header, tensor offsets and sizes)
done on the raw bytes before the parser sees them, so a damaged file gives one clear error
naming the file and the problem. Reading safetensors never executes code."""
import json
import struct

from dmn_localizer.util.errors import FileFormatError

MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_BYTES = {'F64': 8, 'F32': 4, 'F16': 2, 'BF16': 2, 'I64': 8, 'I32': 4, 'I16': 2,
                'I8': 1, 'U8': 1, 'BOOL': 1, 'U16': 2, 'U32': 4, 'U64': 8}


def read_header(path, data, kind='safetensors file'):
    """Validate the safetensors framing of ``data`` (the bytes of ``path``) before any parser
    sees it; returns the header dict. Problems raise FileFormatError naming ``path``; ``kind``
    names what the file should be in the messages."""
    if len(data) < 8:
        raise FileFormatError(path, f'truncated or not a {kind} ({len(data)} bytes)')
    (n,) = struct.unpack('<Q', data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise FileFormatError(path, f'not a {kind}, or truncated (bad header length)')
    try:
        header = json.loads(data[8:8 + n].decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FileFormatError(path, f'not a {kind}, or corrupted (header is not JSON)') \
            from None
    if not isinstance(header, dict):
        raise FileFormatError(path, f'not a {kind} (header is not a JSON object)')
    body = len(data) - 8 - n
    for name, info in header.items():
        if name == '__metadata__':
            continue
        try:
            start, end = info['data_offsets']
            count = 1
            for d in info['shape']:
                count *= int(d)
            size = count * _DTYPE_BYTES[info['dtype']]
            if not all(type(v) is int for v in (start, end)):   # bool and str are not offsets
                raise TypeError('offsets are not integers')
        except (KeyError, TypeError, ValueError):
            raise FileFormatError(path, f'corrupted header entry for {name!r}') from None
        if end > body:
            raise FileFormatError(path, f'truncated: tensor {name!r} ends at byte {end} of '
                                        f'the data, which has {body} bytes')
        if not 0 <= start <= end or end - start != size:
            raise FileFormatError(path, f'corrupted header entry for {name!r}')
    return header
