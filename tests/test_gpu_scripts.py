"""The GPU lease's driver (scripts/gpu_train.py) reads the probe's rate and sizes the run to its time."""

import sys
from pathlib import Path

import pytest

from tests.script_support import SCRIPTS, load_script


@pytest.fixture(scope="module")
def gpu_train():
    return load_script("gpu_train")


def test_the_probes_rate_is_read_from_the_checkpoint_it_keeps(gpu_train, tmp_path):
    """The rate was read from the bar in the probe's log, which is drawn on a terminal only: a probe
    writing to a file printed none, and the lease ended with 'the probe printed no training rate'."""
    import dataclasses

    import torch

    from deepshield.training.trainer import Progress

    checkpoint = tmp_path / "last.pt"
    under_way = Progress(step_in_epoch=80, global_step=80, epoch_images=5120, epoch_seconds=4.0)
    torch.save({"progress": dataclasses.asdict(under_way)}, checkpoint)
    assert gpu_train.probe_rate(checkpoint) == pytest.approx(1280)
    finished = Progress(epoch=1, history=[{"epoch": 0, "images_per_s": 900.0}])
    torch.save({"progress": dataclasses.asdict(finished)}, checkpoint)
    assert gpu_train.probe_rate(checkpoint) == pytest.approx(900)
    torch.save({"progress": dataclasses.asdict(Progress())}, checkpoint)
    with pytest.raises(SystemExit, match="trained no step"):
        gpu_train.probe_rate(checkpoint)
    with pytest.raises(SystemExit, match="left no checkpoint"):
        gpu_train.probe_rate(tmp_path / "none.pt")


def test_the_epochs_fill_the_planned_share_of_the_time_in_whole_batches(gpu_train):
    per_epoch = gpu_train.samples_per_epoch(rate=1400, seconds=420, margin=0.8, epochs=6, batch_size=64)
    assert per_epoch % 64 == 0 and 78_336 <= per_epoch <= 78_400  # 1400 x 420 x 0.8 / 6 = 78,400
    with pytest.raises(SystemExit, match="no batch of 64"):
        gpu_train.samples_per_epoch(rate=10, seconds=30, margin=0.8, epochs=6, batch_size=64)


def test_a_slimmed_checkpoint_keeps_what_export_reads_and_drops_the_resume_state(gpu_train, tmp_path):
    import torch

    state = {
        "model": {"w": torch.ones(3)},
        "optimizer": {"state": {0: torch.zeros(1000)}},
        "scheduler": {"last_epoch": 5},
        "torch_rng": torch.zeros(10, dtype=torch.uint8),
        "config": {"seed": 0},
        "epoch": 5,
        "val_labels": [0, 1],
        "val_logits": [0.1, 0.9],
    }
    torch.save(state, tmp_path / "epoch_006.pt")
    gpu_train.slim_checkpoint(tmp_path / "epoch_006.pt", tmp_path / "e006.pt")
    slim = torch.load(tmp_path / "e006.pt", weights_only=False)
    assert set(slim) == {"model", "config", "epoch", "val_labels", "val_logits"}
    assert torch.equal(slim["model"]["w"], torch.ones(3))


# What the lent machine lacks of what deepshield imports (docs: the device's package list); pydantic and the
# ImageNet weights travel in the kit itself.
ABSENT_ON_THE_LEASE = ("mediapipe", "mlflow", "optuna", "ray", "av", "pillow_heif")
LEASE_IMPORTS = """
import sys
from importlib.machinery import PathFinder

ABSENT = set(sys.argv[1].split(","))


class AbsentHere:
    # a package the lease lacks is found only in the kit's folder (sys.path[0] here), never in site-packages
    def find_spec(self, fullname, path=None, target=None):
        if fullname in ABSENT:
            spec = PathFinder.find_spec(fullname, [sys.path[1]])
            if spec is None:
                raise ModuleNotFoundError(f"No module named {fullname!r} (absent on the lease)", name=fullname)
            return spec
        return None


sys.meta_path.insert(0, AbsentHere())
import deepshield.cli.main, deepshield.training.trainer, deepshield.models.export
print("imported")
"""


def test_the_training_path_imports_with_only_what_the_lease_has_and_the_kits_stand_ins(tmp_path):
    # pillow-heif, imported by deepshield.media at module level and absent there, failed a whole lease at once
    import subprocess
    import sys

    gpu_kit = load_script("gpu_kit")
    site = tmp_path / "site"
    site.mkdir()
    gpu_kit.write_stand_ins(site)
    assert set(gpu_kit.STAND_INS) == {"av", "pillow_heif"}
    src = str(SCRIPTS.parent / "src")
    command = [sys.executable, "-c", LEASE_IMPORTS, ",".join(ABSENT_ON_THE_LEASE)]
    ran = subprocess.run(command, env={"PYTHONPATH": f"{site}:{src}"}, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and ran.stdout.strip() == "imported", ran.stderr[-2000:]
    # without the stand-ins, it fails as the lease did
    failed = subprocess.run(
        command, env={"PYTHONPATH": f"{tmp_path}:{src}"}, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode != 0 and "absent on the lease" in failed.stderr


def test_each_finished_epoch_is_slimmed_into_out_as_it_appears_the_newest_three_kept(gpu_train, tmp_path):
    import torch

    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out"
    checkpoints.mkdir()
    out.mkdir()
    mirror = gpu_train.EpochMirror(checkpoints, out)
    for epoch in range(1, 6):
        state = {"model": {"w": torch.full((2,), float(epoch))}, "optimizer": {"m": torch.zeros(100)}, "epoch": epoch}
        torch.save(state, checkpoints / f"epoch_{epoch:03d}.pt")
        mirror()
    assert sorted(p.name for p in out.iterdir()) == ["e003.pt", "e004.pt", "e005.pt"]
    newest = torch.load(out / "e005.pt", weights_only=False)
    assert set(newest) == {"model", "epoch"} and torch.equal(newest["model"]["w"], torch.full((2,), 5.0))


def test_a_rerun_on_a_warm_machine_starts_from_no_earlier_run(gpu_train, tmp_path):
    """runs/ stays between calls on a warm lease: the second call's train was refused ("holds a run
    already") and the first call's epoch checkpoints came back as its own."""
    stale = tmp_path / "runs" / "gpu-lease" / "checkpoints"
    stale.mkdir(parents=True)
    (stale / "epoch_001.pt").write_bytes(b"an earlier call's")
    (tmp_path / "runs" / "gpu-probe").mkdir()
    (tmp_path / "runs" / "kept").mkdir()
    removed = gpu_train.clear_earlier_runs(tmp_path)
    assert sorted(p.name for p in removed) == ["gpu-lease", "gpu-probe"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["kept"]
    assert gpu_train.clear_earlier_runs(tmp_path) == []


def test_the_kits_size_counts_what_the_device_tool_carries(tmp_path):
    """Tracked files, untracked ones git does not ignore (the tool carries them too: a 5 MB scratch file
    was left out of the 64 MiB check) and the kit; ignored files stay out."""
    import subprocess

    gpu_kit = load_script("gpu_kit")
    repo, kit = tmp_path / "repo", tmp_path / "repo" / ".kit"
    kit.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text(".kit/\nignored.bin\n")  # 18 bytes
    subprocess.run(["git", "add", ".gitignore"], cwd=repo, check=True)
    (repo / "scratch.bin").write_bytes(b"x" * 1000)
    (repo / "ignored.bin").write_bytes(b"x" * 5000)
    (kit / "bank.npz").write_bytes(b"x" * 300)
    assert gpu_kit.travelling_bytes(repo, kit) == 18 + 1000 + 300


def test_too_little_shared_memory_on_a_machine_without_mount_is_said_not_fatal(gpu_train, monkeypatch, capsys):
    # `mount` missing raised FileNotFoundError before training: the one lease lost to it.
    import os
    import subprocess

    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 1, 1, 1, 1, 1, 1, 0, 255)))

    def no_mount(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "mount")

    monkeypatch.setattr(subprocess, "run", no_mount)
    gpu_train.ensure_shared_memory()
    assert "/dev/shm not remounted: [Errno 2] No such file or directory: 'mount'" in capsys.readouterr().out


@pytest.fixture
def kit_here(tmp_path, monkeypatch):
    """gpu_kit with its repository in tmp_path and a kit already built there."""
    gpu_kit = load_script("gpu_kit")
    kit = tmp_path / ".kit"
    (kit / "site").mkdir(parents=True)
    (kit / "faces.npz").write_bytes(b"the faces packed before")
    monkeypatch.setattr(gpu_kit, "REPO", tmp_path)
    monkeypatch.setattr(gpu_kit, "KIT", kit)
    return gpu_kit


def _kit_files(tmp_path):
    """Everything under the kit and whatever beside it a build made (.kit-*)."""
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob(".kit*/**/*"))


def test_a_config_the_pack_refuses_leaves_the_kit_there_was_untouched(kit_here, tmp_path, monkeypatch):
    # The kit was deleted first, then the pack failed on "unknown key optim.lrr": no faces.npz, an empty site/.
    from deepshield.errors import DeepShieldError

    (tmp_path / "unk.toml").write_text("[optim]\nlrr = 0.1\n")
    monkeypatch.setattr(sys, "argv", ["gpu_kit.py", "--config", str(tmp_path / "unk.toml")])
    monkeypatch.setattr(kit_here, "deepshield", lambda argv: pytest.fail("packed with a config it refuses"))
    before = _kit_files(tmp_path)
    with pytest.raises(DeepShieldError, match=r"optim\.lrr"):
        kit_here.main()
    assert _kit_files(tmp_path) == before == [".kit/faces.npz", ".kit/site"]
    assert (tmp_path / ".kit" / "faces.npz").read_bytes() == b"the faces packed before"


def _fake_build(gpu_kit, monkeypatch, fail_at=None):
    def pack(argv):
        Path(argv[argv.index("--out") + 1]).write_bytes(b"new faces")
        return 0

    def step(name):
        def run(*args):
            if name == fail_at:
                raise KeyboardInterrupt
            (args[0] / name).write_text(name)

        return run

    monkeypatch.setattr(gpu_kit, "deepshield", pack)
    monkeypatch.setattr(gpu_kit, "copy_package", lambda package, site: (site / package).write_text(""))
    monkeypatch.setattr(gpu_kit, "add_pydantic_core", lambda site, version, work: work.mkdir())
    monkeypatch.setattr(gpu_kit, "add_half_weights", step("weights"))
    monkeypatch.setattr(gpu_kit, "travelling_bytes", lambda repo, kit: 1000)


def test_a_kit_is_built_aside_and_swapped_in_only_once_whole(kit_here, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gpu_kit.py", "--config", str(SCRIPTS.parent / "docs/study/gpu.toml")])
    _fake_build(kit_here, monkeypatch, fail_at="weights")
    with pytest.raises(KeyboardInterrupt):  # stopped half-way: the old kit stays, nothing half-built beside it
        kit_here.main()
    assert _kit_files(tmp_path) == [".kit/faces.npz", ".kit/site"]
    assert (tmp_path / ".kit" / "faces.npz").read_bytes() == b"the faces packed before"
    _fake_build(kit_here, monkeypatch)
    assert kit_here.main() == 0
    assert (tmp_path / ".kit" / "faces.npz").read_bytes() == b"new faces"
    assert (tmp_path / ".kit" / "site" / "weights").is_file() and (tmp_path / ".kit" / "site" / "av").is_dir()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".kit")] == [".kit"]
