"""Stopped anywhere and resumed, a run ends as the uninterrupted one did; preemption saves; bad files fail clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from gankit.checkpoints import AtomicCheckpointIO, read_checkpoint
from gankit.training import train
from tests.conftest import ROOT, run_cli, write_images
from tests.test_training import read_metrics


class SignalAt(L.Callback):
    """Sends this process a real signal at the end of a given training batch (a scheduler's preemption)."""

    def __init__(self, batch: int, signum: int = signal.SIGTERM) -> None:
        self.batch, self.signum, self.seen = batch, signum, 0

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.seen += 1
        if self.seen == self.batch:
            os.kill(os.getpid(), self.signum)


class SignalIn(L.Callback):
    """Sends SIGTERM once, in the given hook: `on_train_start` (the fit starting, before the preemption callback
    takes the signals over from Lightning) or `on_train_epoch_end` (after every batch hook of the first epoch)."""

    def __init__(self, hook: str) -> None:
        self.sent = False
        setattr(self, hook, self._send)

    def _send(self, *args):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def _with_callback(monkeypatch, callback: L.Callback) -> None:
    original_init = L.Trainer.__init__

    def init(self, *args, callbacks=(), **kwargs):
        original_init(self, *args, callbacks=[callback, *callbacks], **kwargs)

    monkeypatch.setattr(L.Trainer, "__init__", init)


@pytest.fixture
def image_run(cfg_factory, tmp_path):
    """A run that uses every random stream: flips, DiffAugment, n_critic=2, EMA, the digits evaluation."""
    write_images(tmp_path / "imgs", 48, size=(20, 20))
    common = [
        "data=image_folder",
        f"data.root={tmp_path / 'imgs'}",
        "data.channels=1",
        "data.flip=true",
        "data.num_workers=0",
        "data.batch_size=8",  # 6 batches, 3 generator steps an epoch
        "model.augment=[color,translation]",
        "model.n_critic=2",
        "model.ema_decay=0.9",
        "metrics=digits",
        "metrics.evaluation.num_samples=32",
        "callbacks.model_checkpoint.keep=-1",
        "g_steps=null",  # the length in epochs
    ]
    return lambda *extra, output_dir=None: cfg_factory(*common, *extra, output_dir=output_dir)


def _final(cfg) -> dict:
    return read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for index, state in opt_a["state"].items():
            for name, value in state.items():
                assert torch.equal(value, opt_b["state"][index][name]), (index, name)


def test_resume_at_an_epoch_boundary_is_the_same_run(image_run):
    straight = image_run("trainer.max_epochs=3")
    train(straight)
    first = image_run("trainer.max_epochs=1")
    train(first)
    resumed = image_run("trainer.max_epochs=3", f"ckpt_path={Path(first.paths.output_dir) / 'checkpoints/last.ckpt'}")
    train(resumed)
    _assert_same_run(_final(straight), _final(resumed))


@pytest.mark.parametrize(
    ("batch", "global_step"),
    [(7, 10), (6, 9)],  # 7: mid-epoch 2, between the D steps of a cycle; 6: epoch 1's last batch
    ids=["mid_epoch", "last_batch_of_an_epoch"],
)
def test_preempted_mid_epoch_and_resumed_with_auto_is_the_same_run(image_run, monkeypatch, caplog, batch, global_step):
    straight = image_run("trainer.max_epochs=2")
    train(straight)
    stopped = image_run("trainer.max_epochs=2", "ckpt_path=auto")
    run_dir = Path(stopped.paths.output_dir)
    with monkeypatch.context() as patch:
        _with_callback(patch, SignalAt(batch=batch))
        with pytest.raises(SystemExit) as stop:
            train(stopped)
    assert stop.value.code == 128 + signal.SIGTERM
    assert "Resume with: python train.py" in caplog.text and "ckpt_path=auto" in caplog.text
    saved = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == global_step  # the D steps + G steps up to the batch the signal arrived in
    train(image_run("trainer.max_epochs=2", "ckpt_path=auto", output_dir=run_dir))  # the same command again
    _assert_same_run(_final(straight), read_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    # the evaluation of the resume step is not repeated (its last step is in the checkpoint)
    steps = [int(r["step"]) for r in read_metrics(run_dir) if r.get("val/fid")]
    assert len(steps) == len(set(steps))


@pytest.mark.parametrize(("hook", "global_step"), [("on_train_start", 1), ("on_train_epoch_end", 10)])
def test_a_signal_between_batches_stops_at_the_next_batch_with_a_checkpoint(
    image_run, monkeypatch, caplog, hook, global_step
):
    """Lightning registers its own SIGTERM handler after the callbacks' fit start and, alone, would end the
    run between batches with exit status 0 and nothing saved at that step: a scheduler would take a
    preempted job for a finished one. The preemption handler is the only one while training, takes over
    a signal that came while the fit was starting, and the handlers are put back after the fit."""
    before = signal.getsignal(signal.SIGTERM)
    straight = image_run("trainer.max_epochs=2")
    train(straight)
    stopped = image_run("trainer.max_epochs=2", "ckpt_path=auto")
    run_dir = Path(stopped.paths.output_dir)
    with monkeypatch.context() as patch:
        _with_callback(patch, SignalIn(hook))
        with pytest.raises(SystemExit) as stop:
            train(stopped)
    assert stop.value.code == 128 + signal.SIGTERM
    assert "Resume with: python train.py" in caplog.text
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == global_step  # the next batch's
    assert signal.getsignal(signal.SIGTERM) == before
    train(image_run("trainer.max_epochs=2", "ckpt_path=auto", output_dir=run_dir))
    _assert_same_run(_final(straight), read_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_preempted_fresh_run_in_a_used_directory_leaves_the_other_runs_last_checkpoint(image_run, monkeypatch):
    """A run started afresh (no ckpt_path) in another run's directory keeps its checkpoints apart, as Lightning
    versions them (last-v1.ckpt), also when it is preempted before its first periodic save."""
    first = image_run("trainer.max_epochs=1")
    train(first)
    run_dir = Path(first.paths.output_dir)
    old = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    with monkeypatch.context() as patch:
        _with_callback(patch, SignalAt(batch=3))
        with pytest.raises(SystemExit):
            train(image_run("trainer.max_epochs=2", output_dir=run_dir))
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == old
    assert read_checkpoint(run_dir / "checkpoints" / "last-v1.ckpt")["global_step"] == 4  # 3 D steps, 1 G step


def test_sigterm_through_the_command_line_exits_non_zero_with_a_checkpoint(tmp_path):
    run, err = tmp_path / "run", tmp_path / "stderr.txt"
    with open(err, "w") as stderr_file:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "train.py"),
                "debug=fast",
                "g_steps=100000",
                "metrics=none",
                f"hydra.run.dir={run}",
                "callbacks.samples.every_n_g_steps=100000",
            ],  # fmt: skip
            cwd=ROOT,
            env={**os.environ, "WANDB_MODE": "disabled"},
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "samples" / "g_step_0000000.png").is_file():
            time.sleep(0.5)  # training has started: the first grid is drawn at on_train_start
        time.sleep(1)  # a few steps
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    stderr = err.read_text()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Resume with: python train.py" in (run / "debug.log").read_text()  # the log and the console
    saved = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert saved["global_step"] > 0


# ---- checkpoints that cannot hurt --------------------------------------------------------------
def test_kill_9_during_saves_never_leaves_an_unloadable_file(tmp_path):
    """A process saving a checkpoint in a loop, killed at 8 moments of it: last.ckpt always loads."""
    script = (
        "import sys, torch\n"
        "from gankit.checkpoints import AtomicCheckpointIO\n"
        "io, i = AtomicCheckpointIO(), 0\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    i += 1\n"
        "    ckpt = {'state_dict': {'w': torch.full((1_000_000,), float(i))}, 'global_step': i, 'loops': {}}\n"
        "    io.save_checkpoint(ckpt, sys.argv[1])\n"
    )
    paths = [tmp_path / f"trial{trial}" / "last.ckpt" for trial in range(8)]
    processes = []
    for path in paths:  # started together (their imports overlap), killed one by one at different moments
        path.parent.mkdir()
        processes.append(subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True))
    for process in processes:
        process.stdout.readline()
    steps = []
    for trial, (process, path) in enumerate(zip(processes, paths, strict=True)):
        time.sleep(0.3 + 0.37 * (trial % 5) / 5)
        process.kill()
        process.wait()
        checkpoint = read_checkpoint(path)
        assert torch.all(checkpoint["state_dict"]["w"] == checkpoint["global_step"])
        steps.append(checkpoint["global_step"])
    assert max(steps) > 1  # the kills did land during a loop of saves


@pytest.mark.parametrize(
    "content, message",
    [
        (os.urandom(4096), "is not a readable checkpoint"),
        (None, "is not a readable checkpoint"),  # a real checkpoint cut in half
        ("foreign", "is not a gankit training checkpoint"),
    ],
    ids=["random-bytes", "truncated", "foreign"],
)
def test_a_bad_checkpoint_is_one_message_naming_the_file(cfg_factory, tmp_path, content, message):
    bad = tmp_path / "bad.ckpt"
    if content is None:
        AtomicCheckpointIO().save_checkpoint(
            {"state_dict": {"w": torch.ones(10_000)}, "global_step": 1, "loops": {}}, bad
        )
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif content == "foreign":
        torch.save({"model": torch.ones(3)}, bad)
    else:
        bad.write_bytes(content)
    result = run_cli("debug=fast", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gankit: error: ckpt_path=") and str(bad) in last and message in last
    assert "Traceback" not in result.stderr


def test_auto_skips_a_broken_newest_checkpoint(tmp_path, caplog):
    from gankit.checkpoints import resumable_checkpoint

    good = tmp_path / "g_step_0000002.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "global_step": 4, "loops": {}}, good)
    time.sleep(0.01)
    (tmp_path / "last.ckpt").write_bytes(b"half a file")
    assert resumable_checkpoint(tmp_path) == good
    assert "last.ckpt is unreadable (" in caplog.text and "moved aside to last.ckpt.unreadable" in caplog.text
    assert (tmp_path / "last.ckpt.unreadable").read_bytes() == b"half a file"  # kept, not deleted
    assert resumable_checkpoint(tmp_path / "none") is None


# ---- schedules that follow the run length, retention, types ------------------------------------
def test_a_longer_resumed_run_follows_its_own_schedule(cfg_factory):
    first = cfg_factory("model=gan_mlp_r1", "data=ring", "g_steps=4", "metrics=none")
    train(first)
    resumed = cfg_factory(
        "model=gan_mlp_r1", "data=ring", "g_steps=8", "metrics=none",
        f"ckpt_path={Path(first.paths.output_dir) / 'checkpoints/last.ckpt'}",
    )  # fmt: skip
    train(resumed)
    final = read_checkpoint(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt")
    for scheduler in final["lr_schedulers"]:
        assert scheduler["total_iters"] == 8 and scheduler["last_epoch"] == 8
    assert all(group["lr"] == 0 for opt in final["optimizer_states"] for group in opt["param_groups"])
    # at the restart (step 4 of 8) the learning rate was half, not already 0 (the old length)
    fresh = read_checkpoint(Path(first.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert all(group["lr"] == 0 for opt in fresh["optimizer_states"] for group in opt["param_groups"])


def test_d_schedule_counts_generator_steps_with_n_critic(cfg_factory):
    cfg = cfg_factory("model=gan_mlp_r1", "data=ring", "g_steps=4", "model.n_critic=2", "metrics=none")
    train(cfg)
    final = read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert [s["last_epoch"] for s in final["lr_schedulers"]] == [4, 4]  # D reaches 0 at the end, not halfway


def test_a_recipe_that_needs_g_steps_says_so(cfg_factory):
    cfg = cfg_factory("model=gan_mlp_r1", "data=ring", "g_steps=null", "trainer.max_epochs=1", "metrics=none")
    with pytest.raises(SystemExit, match="model.g_scheduler runs over the run's length .* set g_steps=N"):
        train(cfg)


def test_checkpoints_keep_the_newest_and_follow_generator_steps(cfg_factory):
    cfg = cfg_factory(
        "g_steps=12",
        "metrics=none",
        "callbacks.model_checkpoint.every_n_g_steps=2",
        "callbacks.model_checkpoint.keep=2",
        "model.n_critic=2",
    )
    train(cfg)
    names = sorted(p.name for p in (Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt"))
    assert names == ["g_step_0000010.ckpt", "g_step_0000012.ckpt", "last.ckpt"]


@pytest.mark.parametrize("override, key", [("seed=abc", "seed"), ("g_steps=1.5", "g_steps"),
                                           ("data.batch_size=big", "data.batch_size")])  # fmt: skip
def test_wrong_types_name_the_key(cfg_factory, override, key):
    with pytest.raises(SystemExit, match=f"gankit: error: {key}=.* must be a whole number"):
        train(cfg_factory(override))


def test_checkpoints_carry_their_config_and_a_mismatch_is_one_message(cfg_factory, tmp_path):
    """eval.py / generate.py rebuild the model from the checkpoint's own config (a folder whose .hydra was
    rewritten by a refused resume still works); a file without one that does not fit is one message."""
    ring = cfg_factory("model=gan_mlp", "data=ring", "metrics=none")
    train(ring)
    dcgan = tmp_path / "dcgan"  # a real run directory, with its .hydra/config.yaml
    assert run_cli("debug=fast", "metrics=none", f"hydra.run.dir={dcgan}").returncode == 0
    moved = dcgan / "checkpoints" / "ring.ckpt"
    checkpoint = read_checkpoint(Path(ring.paths.output_dir) / "checkpoints" / "last.ckpt")
    AtomicCheckpointIO().save_checkpoint(checkpoint, moved)
    env = {"GANKIT_LOG_DIR": str(tmp_path / "logs")}
    ok = run_cli(f"ckpt_path={moved}", "num_samples=8", "png=false", script="generate.py", env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    del checkpoint["gankit_config"]  # a file from before configs were stored: the folder's config is read
    AtomicCheckpointIO().save_checkpoint(checkpoint, moved)
    for script in ("eval.py", "generate.py"):
        bad = run_cli(f"ckpt_path={moved}", script=script, env=env)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        assert bad.stderr.strip().splitlines()[-1].startswith(f"gankit: error: ckpt_path={moved} holds another model")


def test_auto_moves_unreadable_checkpoints_aside_and_writes_a_fresh_last(image_run, tmp_path):
    cfg = image_run("trainer.max_epochs=1", "ckpt_path=auto", "metrics=none")
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(os.urandom(1000))
    train(cfg)
    names = sorted(p.name for p in folder.iterdir())
    assert "last.ckpt.unreadable" in names and "last.ckpt" in names and "last-v1.ckpt" not in names
    assert read_checkpoint(folder / "last.ckpt")["global_step"] > 0


def test_eval_resizes_the_runs_own_metrics_with_a_plus_override(cfg_factory, tmp_path):
    cfg = cfg_factory()
    train(cfg)
    env = {"GANKIT_LOG_DIR": str(tmp_path / "logs")}
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    result = run_cli(f"ckpt_path={ckpt}", "+metrics.evaluation.num_samples=48", script="eval.py", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "num_fake: 48" in result.stdout and "fid" in result.stdout


@pytest.mark.parametrize(
    "first_overrides",
    [
        ["g_steps=2"],  # 3 generator steps an epoch: mid-epoch, saved at the cut epoch's end
        ["g_steps=2", "callbacks.model_checkpoint.every_n_g_steps=4"],  # the same, saved at the end of training
        ["g_steps=3"],  # at the epoch's end
        ["g_steps=3", "callbacks.model_checkpoint.every_n_g_steps=4"],
        ["g_steps=3", "callbacks.model_checkpoint.every_n_g_steps=3"],  # saved in the epoch's last batch
    ],
    ids=["mid_epoch", "mid_epoch_saved_at_train_end", "epoch_end", "epoch_end_saved_at_train_end", "last_batch"],
)
def test_a_finished_run_extended_with_more_g_steps_is_the_same_run(image_run, first_overrides):
    """A run that ended at its g_steps, started again with a larger g_steps, goes on from its next
    batch: the same weights, and the same batches (D's score of each real batch) at the same steps
    and epochs, as a run that was given the larger g_steps from the start."""
    every_step = "trainer.log_every_n_steps=1"
    straight = image_run("g_steps=5", every_step, *first_overrides[1:])
    train(straight)
    first = image_run(every_step, *first_overrides)
    train(first)
    run_dir = Path(first.paths.output_dir)
    train(image_run("g_steps=5", every_step, *first_overrides[1:], "ckpt_path=auto", output_dir=run_dir))
    _assert_same_run(_final(straight), read_checkpoint(run_dir / "checkpoints" / "last.ckpt"))

    def d_real(run: Path) -> list[tuple[str, str, str]]:
        return [(r["step"], r["epoch"], r["train/d_real"]) for r in read_metrics(run) if r.get("train/d_real")]

    assert len(d_real(run_dir)) == 10  # n_critic=2: 10 batches for 5 generator steps, each logged once
    assert d_real(run_dir) == d_real(Path(straight.paths.output_dir))
