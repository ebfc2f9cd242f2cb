"""The GPU lease's driver (scripts/gpu_train.py) reads the probe's rate and sizes the run to its time."""

import pytest

from tests.script_support import load_script


@pytest.fixture(scope="module")
def gpu_train():
    return load_script("gpu_train")


def test_the_last_rate_tqdm_printed_is_read_in_either_unit(gpu_train, tmp_path):
    log = tmp_path / "probe.log"
    log.write_text(
        "epoch 1/6:  10%| 8/80 [00:04<00:30,  2.50s/batch, loss=0.69]\repoch 1/6:  50%| 40/80 [00:09<00:05, 21.7batch/s]\n"
    )
    assert gpu_train.batches_per_second(log) == pytest.approx(21.7)
    log.write_text("epoch 1/6:  10%| 8/80 [00:20<03:00,  2.50s/batch, loss=0.69]\n")
    assert gpu_train.batches_per_second(log) == pytest.approx(0.4)
    log.write_text("Traceback (most recent call last): ...\n")
    with pytest.raises(SystemExit, match="no training rate"):
        gpu_train.batches_per_second(log)


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
