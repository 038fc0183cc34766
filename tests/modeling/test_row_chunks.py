"""Row-blocked inference (semantic_sam.modeling.row_chunks) gives the unblocked results."""
import pytest
import torch
import torch.nn.functional as F

import semantic_sam.modeling.row_chunks as row_chunks
from semantic_sam.modeling.row_chunks import chunk_rows, rowwise_in_chunks


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 64 rows for a 256-wide hidden layer at one thread (the minimum block size)."""
    monkeypatch.setattr(row_chunks, "_HIDDEN_ELEMENTS_PER_THREAD", 64 * 256)
    assert chunk_rows(256, threads=1) == 64


def _ffn(x, w1, b1, w2, b2):
    return x + F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)


def test_blocks_equal_whole(tiny_blocks):
    torch.manual_seed(0)
    x = torch.randn(2, 333, 16)  # 666 rows: 10 full blocks and a partial one
    w1, b1, w2, b2 = torch.randn(256, 16), torch.randn(256), torch.randn(16, 256), torch.randn(16)
    calls = []

    def fn(t):
        calls.append(t.shape[0])
        return _ffn(t, w1, b1, w2, b2)

    with torch.no_grad():
        whole = _ffn(x, w1, b1, w2, b2)
        blocked = rowwise_in_chunks(fn, x, hidden_width=256)
    assert blocked.shape == whole.shape
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-5)
    block = chunk_rows(256)
    assert sum(calls) == 666 and max(calls) == block and len(calls) == -(-666 // block) > 1


def test_output_width_may_differ(tiny_blocks):
    x = torch.randn(300, 8)
    w = torch.randn(3, 8)
    with torch.no_grad():
        out = rowwise_in_chunks(lambda t: t @ w.t(), x, hidden_width=256)
    torch.testing.assert_close(out, x @ w.t())


def test_no_blocks_when_recording_gradients(tiny_blocks):
    x = torch.randn(500, 8, requires_grad=True)
    calls = []
    out = rowwise_in_chunks(lambda t: calls.append(t.shape[0]) or t * 2, x, hidden_width=256)
    assert calls == [500]
    out.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))


def test_swin_and_pixel_decoder_layers_blocked_equal_training_path(tiny_blocks):
    """The eval-mode blocked window attention and MLP of Swin blocks (shifted or not, two images) and the
    blocked tail of the deformable encoder layer compute what the training-mode code computes (dropout
    and drop path 0)."""
    from semantic_sam.modeling.backbone.swin import SwinTransformerBlock, window_layout
    from semantic_sam.modeling.pixel_decoder.deformable_encoder import DeformableEncoderLayer, encoder_reference_points

    torch.manual_seed(0)
    h, w = 20, 23  # 3 x 4 windows of 7 x 7, padded; 3 windows per block here
    x = torch.randn(2, h * w, 32)
    blocks = [SwinTransformerBlock(dim=32, num_heads=2, window_size=7, shift_size=s) for s in (0, 3)]
    layouts = [window_layout(h, w, 7, s, x.device) for s in (0, 3)]
    layer = DeformableEncoderLayer(d_model=32, d_ffn=256, dropout=0.0, num_feature_levels=2, n_heads=2, n_points=2)
    shapes = torch.tensor([[16, 16], [8, 8]])
    starts = torch.tensor([0, 256])
    src, pos = torch.randn(1, 320, 32), torch.randn(1, 320, 32)
    ref = encoder_reference_points([(16, 16), (8, 8)], src.device)
    with torch.no_grad():
        outs = {}
        for training in (True, False):
            for module in blocks + [layer]:
                module.train(training)
            outs[training] = [b(x, lay) for b, lay in zip(blocks, layouts)] + [layer(src, pos, ref, shapes, starts)]
    for a, b in zip(outs[True], outs[False]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
