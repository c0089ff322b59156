"""The test Slurm cluster's config: loopback only, one partition, no accounting (no daemons)."""

from __future__ import annotations

from pathlib import Path

from federation.sandbox.servers.slurm import PARTITION, SlurmCluster


def test_the_test_cluster_binds_loopback_and_keeps_its_state_in_its_work_dir(tmp_path: Path):
    cluster = SlurmCluster(tmp_path / "slurm", cpus=2, memory_mb=8000)
    config = dict(
        line.split("=", 1)
        for line in cluster._config().splitlines()
        if "=" in line and " " not in line
    )
    assert config["CommunicationParameters"] == "NoInAddrAny"
    assert config["SlurmctldHost"].endswith("(127.0.0.1)")
    assert config["AccountingStorageType"] == "accounting_storage/none"
    assert config["ProctrackType"] == "proctrack/linuxproc"
    for key in ("StateSaveLocation", "SlurmdSpoolDir", "SlurmctldLogFile", "SlurmdPidFile"):
        assert Path(config[key]).is_relative_to(tmp_path / "slurm"), key
    node_line = next(
        line for line in cluster._config().splitlines() if line.startswith("NodeName=")
    )
    assert "NodeAddr=127.0.0.1" in node_line and "CPUs=2" in node_line
    assert f"PartitionName={PARTITION} " in cluster._config()
