"""semantic_sam.utils.cli: every user error becomes one ``error: ...`` line on stderr and exit status 2;
other exceptions keep their traceback; launch arguments are checked before any process starts."""
import os
import subprocess
import sys

import pytest
import torch

from semantic_sam.config import ConfigError, load_config
from semantic_sam.errors import UserError
from semantic_sam.utils.cli import check_launch_args, exit_on_user_error, user_error_message

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(raise_fn, capsys) -> str:
    """Call ``raise_fn`` under exit_on_user_error; assert status 2 and one stderr line; return it."""
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(raise_fn)()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _raise(e: BaseException):
    def fn():
        raise e

    return fn


def test_config_error(capsys):
    line = _run(lambda: load_config(os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml"),
                                    ["SOLVER.BASE_LR=0"]), capsys)
    assert "'SOLVER.BASE_LR': 0.0; allowed: a number > 0" in line


def test_user_error_and_its_subclasses(capsys):
    class BadPrompt(ValueError, UserError):
        pass

    assert _run(_raise(UserError("--input: no images match x/*.jpg")), capsys) == (
        "error: --input: no images match x/*.jpg")
    assert _run(_raise(BadPrompt("point (5, 900) outside the 640x480 image")), capsys) == (
        "error: point (5, 900) outside the 640x480 image")


def test_file_errors_name_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")

    assert _run(lambda: open(missing), capsys) == f"error: {missing}: No such file or directory"
    assert _run(lambda: open(tmp_path), capsys) == f"error: {tmp_path}: Is a directory"
    assert _run(lambda: open(a_file / "sub"), capsys) == f"error: {a_file / 'sub'}: Not a directory"
    denied = PermissionError(13, "Permission denied", "/root/secret.yaml")  # chmod is no test as root
    assert _run(_raise(denied), capsys) == "error: /root/secret.yaml: Permission denied"
    # the project's own FileNotFoundError messages are kept
    assert _run(_raise(FileNotFoundError("checkpoint file not found: x.pth")), capsys) == (
        "error: checkpoint file not found: x.pth")


def test_checkpoint_errors(tmp_path, capsys):
    from semantic_sam.checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint

    assert _run(_raise(CheckpointError("cannot read checkpoint x.pth: truncated")), capsys) == (
        "error: cannot read checkpoint x.pth: truncated")

    path = str(tmp_path / "other.pth")
    torch.save({"weight": torch.zeros(2, 3), "extra": torch.zeros(1)}, path)
    model = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(model, path, strict=True)
    assert len(str(e.value).splitlines()) > 1  # the full report, for logs
    line = _run(_raise(e.value), capsys)
    assert line.startswith(f"error: checkpoint {path} (")
    assert "strict loading failed: 1 missing (e.g. bias), 1 unexpected (e.g. extra)" in line


def test_data_errors(capsys):
    from datasets.sa1b_dataset_mapper import CorruptDatasetError
    from semantic_sam.data.sa1b import CorruptRecordError
    from semantic_sam.data.tsv import TSVFormatError

    assert _run(_raise(CorruptRecordError("bad base64 image", "sa_000.tsv row 3")), capsys) == (
        "error: sa_000.tsv row 3: bad base64 image")
    assert _run(_raise(TSVFormatError("sa_000.lineidx:2: expected a byte offset")), capsys) == (
        "error: sa_000.lineidx:2: expected a byte offset")
    assert _run(_raise(CorruptDatasetError("100 corrupt records in a row")), capsys) == (
        "error: 100 corrupt records in a row")


def test_multi_line_message_is_joined(capsys):
    assert _run(_raise(UserError("bad input:\n  first problem\n\n  second problem\n")), capsys) == (
        "error: bad input:; first problem; second problem")
    assert _run(_raise(UserError()), capsys) == "error: UserError"


@pytest.mark.parametrize(
    "error", [ValueError("a bug"), KeyError("x"), RuntimeError("CUDA error"), OSError(28, "No space left on device")]
)
def test_other_errors_propagate(error):
    assert user_error_message(error) is None
    with pytest.raises(type(error)) as e:
        exit_on_user_error(_raise(error))()
    assert e.value is error


def test_return_value_and_metadata_pass_through():
    @exit_on_user_error
    def main(x: int) -> int:
        """Doc."""
        return x + 1

    assert main(1) == 2 and main.__name__ == "main" and main.__doc__ == "Doc."


def test_one_line_in_a_real_process():
    code = (
        "from semantic_sam.config import load_config\n"
        "from semantic_sam.utils.cli import exit_on_user_error\n"
        "tiny = 'configs/semantic_sam_tiny_cpu.yaml'\n"
        "exit_on_user_error(lambda: load_config(tiny, ['SOLVER.CHECKPOINT_PERIOD=0']))()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "'SOLVER.CHECKPOINT_PERIOD': 0; allowed: an integer >= 1" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "num_gpus, num_machines, machine_rank, match",
    [
        (0, 1, 0, "--num-gpus 0 is invalid; allowed: an integer >= 1"),
        (-2, 1, 0, "--num-gpus -2"),
        (1, 0, 0, "--num-machines 0 is invalid; allowed: an integer >= 1"),
        (1, 2, 2, r"--machine-rank 2 is invalid; allowed: 0 to 1 \(--num-machines 2\)"),
        (1, 1, -1, "--machine-rank -1"),
    ],
)
def test_check_launch_args_rejects(num_gpus, num_machines, machine_rank, match):
    with pytest.raises(UserError, match=match):
        check_launch_args(num_gpus, num_machines, machine_rank)


def test_check_launch_args_accepts():
    check_launch_args(1, 1, 0)
    check_launch_args(8, 4, 3)


def test_config_error_message_is_the_user_message():
    e = ConfigError("x.yaml:3: duplicate key 'A' (first at line 1)")
    assert user_error_message(e) == "x.yaml:3: duplicate key 'A' (first at line 1)"
