"""Infrastructure: atomic files, allocator, child processes, data paths, safetensors headers,
PNG figures."""
