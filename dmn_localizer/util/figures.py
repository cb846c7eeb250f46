"""Matplotlib figures without pyplot (no global backend state, no GUI), saved as PNG
atomically."""
import io

from dmn_localizer.util.atomic import write_bytes


def figure(**kwargs):
    """A matplotlib Figure without pyplot (no global backend state, no GUI)."""
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def save_png(fig, path, dpi=110):
    """Write ``fig`` as a PNG atomically; returns ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight')
    write_bytes(path, buf.getvalue())
    return path
