"""The analytic FLOP model of one observation update (:class:`FlopModel`).

FLOPs are counted analytically (:class:`FlopModel`) from the layer shapes of what each path
computes, in the convention of :class:`torch.utils.flop_counter.FlopCounterMode` (the tests
check the two agree): 2 x multiply-accumulates of every convolution, transposed convolution,
matrix product and linear layer, zero-padded border positions included; element-wise work
(adds, relu, softmax, sin/cos, the reference's weighted sum) and indexing (nearest-context
search and gathers) are not counted. With ``P = 64 h w`` (``h = w = image_size / 4``),
``conv(ci, co) = 2 ci co 9 h w`` (3x3, stride 1) and the head
``head = 2 conv(64, 64) + 2 (P 512 + 512)``::

    fast update      = Q + K (conv(64, 32) + conv(32, 64) + head) + K Na 14 P
        Q            = CNN3 + CNN5 + 2 32 64 9 h w (adjoint of conv2b) + conv(64, 64)
        Na           = min(Nc, M) for nearest_m, Nc for all_contexts
        14 P / pair  = 8 P (coordinate basis maps) + 2 P (scores) + 2 P (attended keys)
                       + 2 P (attended CNN6 map features)
    reference update = sum over chunks of k particles of
                       CNN3 + CNN5 + Nc (CNN1 + CNN4)
                       + k Nc (conv(68, 64) + conv(64, 32) + 2 32 h w)
                       + k (conv(160, 64) + head)
"""
import math


class FlopModel:
    """Analytic FLOP counts (2 x MACs of conv/matmul/linear) for one image size.

    Layer shapes follow :mod:`dmn_localizer.model.dmn_networks`; see the module docstring for the
    formulas. All methods return Python ints.
    """

    def __init__(self, image_size=32):
        self.s = image_size
        self.h = image_size // 4
        self.hw = self.h * self.h
        self.P = 64 * self.hw

    def conv3(self, cin, cout):
        """A 3x3 stride-1 zero-padded conv on the h x w feature map."""
        return 2 * cin * cout * 9 * self.hw

    def trunk(self):
        """The shared image trunk (32-2-2, 32-3-1, 64-2-2) on one image."""
        half = (self.s // 2) ** 2
        return 2 * 3 * 32 * 4 * half + 2 * 32 * 32 * 9 * half + 2 * 32 * 64 * 4 * self.hw

    def cnn1(self):
        return self.trunk() + self.conv3(64, 64)

    def cnn3(self):
        return self.trunk() + self.conv3(64, 32) + self.conv3(32, 64) + self.conv3(64, 32)

    def cnn4(self):
        return self.conv3(64, 128) + self.conv3(128, 64)

    def cnn5(self):
        return self.trunk() + self.conv3(64, 64) + self.conv3(64, 128) + self.conv3(128, 64)

    def head(self):
        """CNN6 layers 2-3 and FC1 for one particle."""
        return 2 * self.conv3(64, 64) + 2 * (self.P * 512 + 512)

    def encode_query(self):
        """:meth:`DMN.encode_query` for one image."""
        return self.cnn3() + self.conv3(32, 64) + self.cnn5() + self.conv3(64, 64)

    def fast_log_likelihood(self, k, n, per_pair=14):
        """:meth:`DMN.log_likelihood` for k particles attending to n contexts each (per pair:
        coordinate maps 8P, scores 2P, weighted sum 2P, CNN6 map term 2P)."""
        return (k * (self.conv3(64, 32) + self.conv3(32, 64) + self.head())
                + k * n * per_pair * self.P)

    def fast_update(self, k, nc, m):
        """Encode the query + the localizer's log-likelihoods (m = 0: all contexts). With
        Nc > M the localizer runs :meth:`DMN.log_likelihood_selected`; counted as torch's
        FlopCounterMode counts it, 10P per pair: its score matrix-vector product and the
        weighted gather (``embedding_bag``) of the CNN6 map term (2P each) are not counted
        (under 2% of the update at K = 2048)."""
        if m <= 0 or nc <= m:
            return self.encode_query() + self.fast_log_likelihood(k, nc)
        return self.encode_query() + self.fast_log_likelihood(k, m, per_pair=10)

    def reference_call(self, k, n):
        """One :meth:`DMN.reference_log_likelihood` call on k particles and n contexts."""
        per_pair = self.conv3(68, 64) + self.conv3(64, 32) + 2 * 32 * self.hw
        return (self.cnn3() + self.cnn5() + n * (self.cnn1() + self.cnn4())
                + k * n * per_pair + k * (self.conv3(160, 64) + self.head()))

    def reference_update(self, k, n, chunk):
        """The reference over k particles in chunks of ``chunk``."""
        full, rest = divmod(k, chunk)
        return full * self.reference_call(chunk, n) + (self.reference_call(rest, n) if rest
                                                       else 0)

    def reference_reembed(self, k, n, chunk):
        """FLOPs the chunked reference spends re-embedding contexts and re-encoding the query
        beyond doing so once per update."""
        calls = math.ceil(k / chunk)
        return (calls - 1) * (self.cnn3() + self.cnn5() + n * (self.cnn1() + self.cnn4()))
