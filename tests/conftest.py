import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# moto's request recorder (tests/test_node_data.py counts GETs with it) appends to
# ./moto_recording by default: keep it out of the checkout, whose state every run records (env.git_dirty)
_RECORDING = Path(__file__).resolve().parent.parent / "build" / "moto_recording"
_RECORDING.parent.mkdir(exist_ok=True)
os.environ.setdefault("MOTO_RECORDER_FILEPATH", str(_RECORDING))

from superpos.settings import default_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real GLUE/SuperGLUE files (SUPERPOS_DATA_DIR or ../shared/data); skip if absent."""
    path = default_data_dir()
    if not (path / "rte" / "train.tsv").is_file():
        pytest.skip(f"real GLUE/SuperGLUE data not found at {path} (set SUPERPOS_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_t5():
    from superpos.backbones import load_backbone

    return load_backbone("tiny-t5", dropout=False)


@pytest.fixture(scope="session")
def minilm():
    from superpos.backbones import load_backbone

    return load_backbone("minilm", dropout=False)


@pytest.fixture(scope="session")
def fixture_data_dir(tmp_path_factory) -> Path:
    """Small files in the original formats for all 14 tasks (see glue_fixtures.py)."""
    from glue_fixtures import write_original

    return write_original(tmp_path_factory.mktemp("glue_data"))


@pytest.fixture
def tokenized_cache(tmp_path, monkeypatch) -> Path:
    """A fresh, private tokenisation cache (SUPERPOS_CACHE) for one test."""
    monkeypatch.setenv("SUPERPOS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def cuda_faked(monkeypatch):
    """superpos.bench's CUDA branch on CPU: CUDA's bookkeeping faked, torch.compile left out,
    tiny shapes for small and base, and no bf16 8192^3 matmul (minutes on CPU)."""
    import torch

    from superpos.bench import timing, workload

    monkeypatch.setattr(timing, "on_cuda", lambda device: True)
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "fake GPU")
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    monkeypatch.setattr(timing, "matmul_peak", lambda device: (1.0, "fake"))
    tiny = dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4)
    monkeypatch.setattr(workload, "SHAPES", {"small": tiny, "base": tiny})


@pytest.fixture
def one_thread():
    """Small ops: one torch thread avoids thread-sync costs on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on 127.0.0.1 with a bucket ``sweeps``, reached through the standard AWS
    variables (AWS_ENDPOINT_URL), as a MinIO or Ceph endpoint would be."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="sweeps")
    yield env
    server.stop()


def pytest_collection_modifyitems(config, items):
    """The longest files first (the soak, the launches, the fault tests): with several workers
    (``make test``) a long file that started last would run alone at the end."""
    def weight(item) -> int:
        if item.get_closest_marker("cluster") or getattr(item.module, "__name__", "") == "test_soak":
            return 0
        return next((i for i, mark in enumerate(("faults", "slow"), 1) if item.get_closest_marker(mark)), 3)

    items.sort(key=weight)
