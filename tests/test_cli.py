"""The `knetflow` command."""

from knetflow import cli


def test_devices_lists_the_cpu(capsys):
    assert cli.main(["devices"]) == 0
    assert "cpu:0 cpu" in capsys.readouterr().out


def test_demo_trains_and_the_loss_falls(capsys):
    assert cli.main(["demo", "--epochs", "2", "--samples", "3000"]) == 0
    out = capsys.readouterr().out
    losses = [float(line.split("train loss ")[1].split(",")[0])
              for line in out.splitlines() if "train loss" in line]
    assert len(losses) == 2 and losses[1] < losses[0]
