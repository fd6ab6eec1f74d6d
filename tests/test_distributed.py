"""Running under torchrun: rank bookkeeping, sharding, and collectives on a real 2-process gloo group."""

import json
import subprocess
import sys
import textwrap

import pytest

from napari_softseg.errors import SoftsegError
from napari_softseg.model.distributed import Distributed


def test_a_world_of_one_outside_torchrun():
    d = Distributed.from_environment({})
    assert (d.rank, d.world_size, d.enabled, d.is_main) == (0, 1, False, True)
    assert d.agree(True) is True and d.sum([1.5, 2]) == [1.5, 2.0]
    assert d.device_for("cuda") == "cuda"


def test_environment_is_read_and_checked():
    d = Distributed.from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (d.rank, d.world_size, d.local_rank, d.is_main) == (3, 4, 1, False)
    assert d.device_for("cuda") == "cuda:1" and d.device_for("cpu") == "cpu"
    with pytest.raises(SoftsegError, match="inconsistent"):
        Distributed.from_environment({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(SoftsegError, match="malformed"):
        Distributed.from_environment({"WORLD_SIZE": "two"})


def test_shards_are_disjoint_covering_and_stable():
    items = [f"case{i}" for i in range(11)]
    shards = [Distributed(rank=r, world_size=3).shard(items) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(items)
    assert all(not set(a) & set(b) for i, a in enumerate(shards) for b in shards[i + 1 :])
    assert shards == [Distributed(rank=r, world_size=3).shard(items) for r in range(3)]


def test_collectives_on_two_cpu_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from napari_softseg.model.distributed import Distributed
        d = Distributed.from_environment()
        d.start("cpu")
        out = {{"rank": d.rank, "world": d.world_size,
               "agree": d.agree(d.rank == 0),   # rank 0 says True, rank 1 False: all get True
               "sum": d.sum([d.rank + 1, 10]),
               "shard": d.shard(list(range(5)))}}
        d.stop()
        open(r"{tmp_path}/rank%d.json" % out["rank"], "w").write(json.dumps(out))
    """))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert all(r["agree"] is True for r in ranks)
    assert all(r["sum"] == [3.0, 20.0] for r in ranks)
    assert ranks[0]["shard"] == [0, 2, 4] and ranks[1]["shard"] == [1, 3]
