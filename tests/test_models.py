"""Tests for models.py: shapes, parameter counts, weight sharing, checkpoints, VGG loading."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import checkpoints
import models
import utils
import vgg_weights

N_PARAMS = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731


def tiny_srresnet(scale: int = 4, cls=models.SRResNet) -> nn.Module:
    return cls(scale=scale, n_blocks=2, channels=8)


def tiny_rrdbnet(scale: int = 4) -> nn.Module:
    return models.RRDBNet(scale=scale, n_blocks=1, channels=8, growth=4)


# ---------------------------------------------------------------------------- generators
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("make", [tiny_srresnet, tiny_rrdbnet], ids=["SRResNet", "RRDBNet"])
def test_generator_output_shape(make, scale):
    net = make(scale)
    lr = torch.rand(2, 3, 5, 7)
    sr = net(lr)
    assert net.scale == scale
    assert sr.shape == (2, 3, 5 * scale, 7 * scale)
    assert sr.dtype == torch.float32


@pytest.mark.parametrize("cls", [models.SRResNet, models.Generator, models.RRDBNet])
@pytest.mark.parametrize("scale", [1, 5, 16])
def test_generator_rejects_bad_scale(cls, scale):
    with pytest.raises(ValueError, match="scale"):
        cls(scale=scale, n_blocks=1, channels=8)


def test_srresnet_x4_parameter_count():
    net = models.SRResNet()  # built, never run: the paper configuration
    assert N_PARAMS(net) == 1_549_462
    # a real count: it changes with the configuration
    assert N_PARAMS(models.SRResNet(n_blocks=15)) < N_PARAMS(net)
    assert N_PARAMS(models.SRResNet(scale=2)) < N_PARAMS(net)


def test_srresnet_layout_uses_single_parameter_prelu_and_subpixel():
    net = tiny_srresnet(4)
    prelus = [m for m in net.modules() if isinstance(m, nn.PReLU)]
    assert all(m.weight.numel() == 1 for m in prelus)
    # head + one per residual block + one per sub-pixel block
    assert len(prelus) == 1 + 2 + 2
    assert sum(isinstance(m, nn.PixelShuffle) for m in net.modules()) == 2
    net3 = tiny_srresnet(3)
    shuffles = [m for m in net3.modules() if isinstance(m, nn.PixelShuffle)]
    assert [m.upscale_factor for m in shuffles] == [3]


def test_generator_loads_srresnet_weights():
    torch.manual_seed(0)
    srresnet = tiny_srresnet(4).eval()
    lr = torch.rand(1, 3, 6, 6)
    expected = srresnet(lr)

    gen = tiny_srresnet(4, cls=models.Generator)
    gen.load_state_dict(srresnet.state_dict())  # same keys
    torch.testing.assert_close(gen.eval()(lr), expected)

    for source in (srresnet, srresnet.state_dict(), {"arch": models.generator_arch(srresnet),
                                                     "generator": srresnet.state_dict()}):
        gen = checkpoints.generator_from_srresnet(source)
        assert isinstance(gen, models.Generator)
        torch.testing.assert_close(gen.eval()(lr), expected)


def test_generator_from_bare_state_infers_architecture():
    src = models.SRResNet(scale=3, n_blocks=3, channels=8)
    gen = checkpoints.generator_from_srresnet(src.state_dict())
    assert gen.arch_kwargs == src.arch_kwargs
    src8 = models.SRResNet(scale=8, n_blocks=1, channels=4)
    assert checkpoints.generator_from_srresnet(src8.state_dict()).arch_kwargs == src8.arch_kwargs


def test_generator_from_srresnet_rejects_other_nets():
    with pytest.raises(TypeError):
        checkpoints.generator_from_srresnet(tiny_rrdbnet())
    with pytest.raises(ValueError, match="not an SRResNet"):
        checkpoints.generator_from_srresnet(tiny_rrdbnet().state_dict())


# ---------------------------------------------------------------------------- discriminators
@pytest.mark.parametrize("size", [16, 96, 128])
def test_discriminator_logits_shape(size):
    d = models.Discriminator(channels=4, fc_size=16)
    out = d(torch.rand(3, 3, size, size))
    assert out.shape == (3,)


def test_discriminator_layout():
    d = models.Discriminator()
    convs = [m for m in d.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.features) == 7
    assert isinstance(d.features[1], nn.LeakyReLU)  # no BN after the first conv
    linears = [m for m in d.classifier if isinstance(m, nn.Linear)]
    assert [lin.out_features for lin in linears] == [1024, 1]


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("make", [lambda: tiny_srresnet(4), lambda: tiny_srresnet(2, models.Generator),
                                  lambda: tiny_rrdbnet(3)], ids=["SRResNet", "Generator", "RRDBNet"])
def test_save_load_generator_round_trip(tmp_path, make):
    torch.manual_seed(1)
    net = make()
    with torch.no_grad():  # make BN running stats non-trivial so they must travel too
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    path = checkpoints.save_generator(tmp_path / "sub" / "g.pth", net, epoch=7, config={"lr": 1e-4})
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = checkpoints.load_generator(path)
    assert type(loaded) is type(net)
    assert not loaded.training
    assert loaded.arch_kwargs == net.arch_kwargs
    lr = torch.rand(1, 3, 5, 6)
    torch.testing.assert_close(loaded(lr), net.eval()(lr))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 7 and ckpt["arch"]["name"] == type(net).__name__


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module."])
def test_load_generator_strips_wrapper_prefixes(tmp_path, prefix):
    net = tiny_srresnet(2).eval()
    state = {prefix + k: v for k, v in net.state_dict().items()}
    checkpoints.save_state(tmp_path / "g.pth", {"arch": models.generator_arch(net), "generator": state})
    loaded = checkpoints.load_generator(tmp_path / "g.pth")
    lr = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(loaded(lr), net(lr))


def test_clean_state_dict_keeps_partial_prefixes():
    state = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    assert utils.clean_state_dict(state).keys() == state.keys()


def test_load_generator_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.ipynb"):
        checkpoints.load_generator(tmp_path / "missing.pth")

    net = tiny_srresnet(2)
    checkpoints.save_state(tmp_path / "bare.pth", net.state_dict())
    with pytest.raises(ValueError, match="not a kit generator checkpoint"):
        checkpoints.load_generator(tmp_path / "bare.pth")

    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        checkpoints.load_generator(tmp_path / "junk.pth")

    arch = {"name": "SRResNet", "kwargs": {"scale": 2, "n_blocks": 3, "channels": 8}}  # 3 != 2 blocks
    checkpoints.save_state(tmp_path / "mismatch.pth", {"arch": arch, "generator": net.state_dict()})
    with pytest.raises(checkpoints.CheckpointError, match="different architecture"):  # one line, before building
        checkpoints.load_generator(tmp_path / "mismatch.pth")

    checkpoints.save_state(tmp_path / "unknown.pth", {"arch": {"name": "EDSR", "kwargs": {}}, "generator": {}})
    with pytest.raises(ValueError, match="unknown generator architecture"):
        checkpoints.load_generator(tmp_path / "unknown.pth")


def test_generator_arch_and_build():
    net = tiny_rrdbnet(8)
    arch = models.generator_arch(net)
    assert arch == {"name": "RRDBNet", "kwargs": {"scale": 8, "n_blocks": 1, "channels": 8, "growth": 4}}
    rebuilt = models.build_generator(arch)
    assert rebuilt.state_dict().keys() == net.state_dict().keys()
    with pytest.raises(TypeError, match="not a kit generator"):
        models.generator_arch(models.Discriminator(channels=4, fc_size=8))
    with pytest.raises(ValueError, match="reserved"):
        checkpoints.save_generator("unused.pth", net, generator={})


def test_checkpoint_with_python_objects_is_refused_not_unpickled(tmp_path):
    easydict = pytest.importorskip("easydict")
    net = tiny_srresnet(2)
    with pytest.raises(TypeError, match="EasyDict"):  # caught before anything is written
        checkpoints.save_generator(tmp_path / "g.pth", net, config=easydict.EasyDict(lr=1e-4))
    assert not (tmp_path / "g.pth").exists()
    torch.save({"arch": models.generator_arch(net), "generator": net.state_dict(),
                "config": easydict.EasyDict(lr=1e-4)}, tmp_path / "old.pth")
    with pytest.raises(ValueError, match="never unpickles code.*convert-trusted"):
        checkpoints.load_generator(tmp_path / "old.pth")


# ---------------------------------------------------------------------------- ESRGAN parts
def test_rrdb_init_is_scaled_kaiming():
    torch.manual_seed(0)
    net = models.RRDBNet(scale=4, n_blocks=1, channels=64, growth=32)
    rdb = net.body[0].rdb1
    for conv in (rdb.conv1, rdb.conv3, rdb.conv5):
        fan_in = conv.weight[0].numel()
        expected_std = 0.1 * (2.0 / fan_in) ** 0.5  # kaiming normal (ReLU gain), times 0.1
        assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.1)
        assert conv.weight.mean().abs().item() < 0.1 * expected_std
        assert torch.count_nonzero(conv.bias) == 0
    # why: a fresh dense block is close to the identity, so the deep trunk starts stable
    x = torch.randn(1, 64, 8, 8)
    rel_change = ((rdb(x) - x).norm() / x.norm()).item()
    assert rel_change < 0.05


def test_rrdbnet_has_no_batchnorm_and_basicsr_names():
    net = tiny_rrdbnet(4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    keys = net.state_dict().keys()
    for k in ("conv_first.weight", "body.0.rdb1.conv1.weight", "body.0.rdb3.conv5.bias", "conv_body.weight",
              "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.weight"):
        assert k in keys
    assert "conv_up3.weight" in tiny_rrdbnet(8).state_dict()
    assert "conv_up2.weight" not in tiny_rrdbnet(3).state_dict()


@pytest.mark.parametrize("size", [96, 128])
def test_vgg_style_discriminator_logits_shape(size):
    d = models.VGGStyleDiscriminator(channels=4)
    assert d(torch.rand(2, 3, size, size)).shape == (2,)


def test_vgg_style_discriminator_layout():
    d = models.VGGStyleDiscriminator()
    convs = [m for m in d.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert [c.kernel_size[0] for c in convs] == [3, 4] * 5
    assert [c.stride[0] for c in convs] == [1, 2] * 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.features) == 9
    assert [m.out_features for m in d.classifier if isinstance(m, nn.Linear)] == [100, 1]


def _two_states():
    torch.manual_seed(0)
    a, b = tiny_srresnet(2), tiny_srresnet(2)
    with torch.no_grad():
        for m in b.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.num_batches_tracked.fill_(5)
    return a.state_dict(), b.state_dict()


def test_interpolate_networks_endpoints_and_middle():
    psnr, gan = _two_states()
    for alpha, expect in ((0.0, psnr), (1.0, gan)):
        out = models.interpolate_networks(psnr, gan, alpha)
        for k in gan:
            if gan[k].is_floating_point():
                torch.testing.assert_close(out[k], expect[k])
    mid = models.interpolate_networks(psnr, gan, 0.5)
    k = "head.0.weight"
    torch.testing.assert_close(mid[k], (psnr[k] + gan[k]) / 2)
    assert not torch.equal(mid[k], psnr[k])
    nbt = [k for k in gan if k.endswith("num_batches_tracked")]
    assert nbt and all(mid[k].item() == 5 and mid[k].dtype == torch.long for k in nbt)
    net = tiny_srresnet(2)
    net.load_state_dict(mid)  # a loadable state_dict
    assert psnr["head.0.weight"] is not mid["head.0.weight"]


def test_interpolate_networks_errors():
    psnr, gan = _two_states()
    with pytest.raises(ValueError, match="alpha"):
        models.interpolate_networks(psnr, gan, 1.5)
    with pytest.raises(ValueError, match="alpha"):
        models.interpolate_networks(psnr, gan, -0.1)
    with pytest.raises(ValueError, match="different parameters"):
        models.interpolate_networks(psnr, tiny_srresnet(4).state_dict(), 0.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        models.interpolate_networks(psnr, models.SRResNet(scale=2, n_blocks=2, channels=4).state_dict(), 0.5)


# ---------------------------------------------------------------------------- TruncatedVGG19
# torchvision vgg19().features conv indices, block by block (each conv is followed by its ReLU)
TV_CONVS = [[0, 2], [5, 7], [10, 12, 14, 16], [19, 21, 23, 25], [28, 30, 32, 34]]


@pytest.mark.parametrize("i,j", [(i + 1, j + 1) for i, block in enumerate(TV_CONVS) for j in range(len(block))])
@pytest.mark.parametrize("before", [False, True])
def test_vgg_layer_mapping(i, j, before):
    expected_last = TV_CONVS[i - 1][j - 1] + (0 if before else 1)
    assert models.vgg19_layer_index(i, j, before) == expected_last
    vgg = models.TruncatedVGG19(i, j, before_activation=before, random_init=True)
    assert len(vgg.features) == expected_last + 1
    assert isinstance(vgg.features[-1], nn.Conv2d if before else nn.ReLU)
    conv_keys = {int(k.split(".")[1]) for k in vgg.state_dict()}
    assert conv_keys == {c for block in TV_CONVS for c in block if c <= expected_last}


def test_vgg54_ends_at_35_or_34():
    assert models.vgg19_layer_index(5, 4) == 35
    assert models.vgg19_layer_index(5, 4, before_activation=True) == 34
    assert models.vgg19_layer_index(2, 2) == 8


@pytest.mark.parametrize("i,j", [(1, 3), (2, 3), (3, 5), (6, 1), (0, 1), (5, 0)])
def test_vgg_rejects_missing_layers(i, j):
    with pytest.raises(ValueError, match="no layer"):
        models.TruncatedVGG19(i, j, random_init=True)


def test_vgg_is_frozen_eval_and_normalises():
    vgg = models.TruncatedVGG19(2, 2, random_init=True)
    assert all(not p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    feat = vgg(x)
    assert feat.shape == (2, 128, 8, 8)
    feat.mean().backward()  # gradients reach the input (the SR image), not the weights
    assert x.grad is not None and all(p.grad is None for p in vgg.parameters())
    # ImageNet normalisation inside: equals the raw layers applied to normalised input
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(vgg(x), vgg.features((x - mean) / std))
    assert set(vgg.state_dict()) == {f"features.{c}.{p}" for c in (0, 2, 5, 7) for p in ("weight", "bias")}


def _fake_vgg19_state() -> dict:
    """A small 'official-like' VGG19 state_dict: the VGG22 convs, a classifier, an unused deeper key."""
    torch.manual_seed(3)
    state = {}
    for idx, (cin, cout) in zip((0, 2, 5, 7), ((3, 64), (64, 64), (64, 128), (128, 128))):
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3)
        state[f"features.{idx}.bias"] = torch.randn(cout)
    state["features.10.weight"] = torch.randn(1)  # not needed for VGG22: ignored
    state["classifier.0.weight"] = torch.randn(2, 2)  # ignored
    return state


def _assert_has_weights(vgg, state):
    for k, v in vgg.state_dict().items():
        torch.testing.assert_close(v, state[k])


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub dir for this test (restored afterwards)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # remembered and restored by monkeypatch
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def offline(monkeypatch):
    """Point VGG19_URL at a closed local port, so any download attempt fails fast."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(vgg_weights, "VGG19_URL", f"http://127.0.0.1:{port}/vgg19-dcbb9e9d.pth")


def test_vgg_loads_explicit_path(tmp_path, hub_dir, offline):
    state = _fake_vgg19_state()
    torch.save(state, tmp_path / "my_vgg.pth")
    vgg = models.TruncatedVGG19(2, 2, weights=tmp_path / "my_vgg.pth")
    _assert_has_weights(vgg, state)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        models.TruncatedVGG19(2, 2, weights=tmp_path / "nope.pth")


def test_vgg_loads_from_hub_cache(hub_dir, offline):
    state = _fake_vgg19_state()
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(state, hub_dir / "checkpoints" / "vgg19-dcbb9e9d.pth")
    _assert_has_weights(models.TruncatedVGG19(2, 2), state)


def test_vgg_downloads_from_url(tmp_path, hub_dir, monkeypatch):
    import functools
    import hashlib
    import http.server
    import threading

    state = _fake_vgg19_state()
    served = tmp_path / "served"
    served.mkdir()
    torch.save(state, served / "tmp.pth")
    # name it like torchvision does (sha256 prefix), so the download's hash check runs for real
    sha = hashlib.sha256((served / "tmp.pth").read_bytes()).hexdigest()
    name = f"vgg19-{sha[:8]}.pth"
    (served / "tmp.pth").rename(served / name)

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(vgg_weights, "VGG19_URL", f"http://127.0.0.1:{server.server_address[1]}/{name}")
        vgg = models.TruncatedVGG19(2, 2)
    finally:
        server.shutdown()
        server.server_close()
    _assert_has_weights(vgg, state)
    assert (hub_dir / "checkpoints" / name).is_file()  # cached for next time


def test_vgg_error_when_no_weights_anywhere(hub_dir, offline):
    with pytest.raises(RuntimeError) as info:
        models.TruncatedVGG19(2, 2)
    msg = str(info.value)
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in msg
    assert str(hub_dir / "checkpoints" / "vgg19-dcbb9e9d.pth") in msg
    assert "weights=" in msg and "download from http://127.0.0.1" in msg


def test_vgg_rejects_wrong_state(tmp_path, hub_dir, offline):
    state = _fake_vgg19_state()
    del state["features.7.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="features.7.weight"):
        models.TruncatedVGG19(2, 2, weights=tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not both"):
        models.TruncatedVGG19(2, 2, weights=tmp_path / "partial.pth", random_init=True)


def test_save_generator_unwraps_dataparallel_and_compile(tmp_path):
    net = tiny_srresnet(2)

    class FakeCompiled(nn.Module):  # what torch.compile returns: the net under `_orig_mod`
        def __init__(self, mod):
            super().__init__()
            self._orig_mod = mod

    for wrapped in (nn.DataParallel(net), FakeCompiled(net), FakeCompiled(nn.DataParallel(net))):
        assert next(iter(wrapped.state_dict())).startswith(("module.", "_orig_mod."))
        assert models.generator_arch(wrapped)["name"] == "SRResNet"
        path = checkpoints.save_generator(tmp_path / "g.pth", wrapped)
        saved = torch.load(path, weights_only=True)["generator"]
        assert saved.keys() == net.state_dict().keys()
