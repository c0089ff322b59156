"""The Spark settings of a Hail session: which master, which addresses, which executors (no JVM)."""

from __future__ import annotations

from federation.analyses.session import (
    IR_LOG_ENV,
    NO_IR_LOGGING_FLAG,
    SPARK_MASTER_ENV,
    HailSettings,
    _loopback_spark_conf,
    hail_flags,
    spark_master,
)


def test_the_environment_names_the_master_over_the_node_config(monkeypatch):
    monkeypatch.setenv(SPARK_MASTER_ENV, "spark://127.0.0.1:7077")
    assert spark_master(HailSettings(master="local[2]")) == "spark://127.0.0.1:7077"
    monkeypatch.delenv(SPARK_MASTER_ENV)
    assert spark_master(HailSettings(master="local[2]")) == "local[2]"


def test_a_local_session_binds_loopback_and_has_no_web_ui(monkeypatch):
    monkeypatch.delenv(SPARK_MASTER_ENV, raising=False)
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.1.2.3")  # ignored: local[N] needs no network
    conf = _loopback_spark_conf(HailSettings(master="local[2]"))
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"
    assert "spark.executor.memory" not in conf


def test_a_cluster_session_binds_the_sites_spark_address_and_sizes_executors(monkeypatch):
    monkeypatch.delenv(SPARK_MASTER_ENV, raising=False)
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.1.2.3")
    settings = HailSettings(master="spark://10.1.2.1:7077", executor_memory="8g", executor_cores=4)
    conf = _loopback_spark_conf(settings)
    assert conf["spark.driver.bindAddress"] == "10.1.2.3"
    assert conf["spark.ui.enabled"] == "false"
    assert (conf["spark.executor.memory"], conf["spark.executor.cores"]) == ("8g", "4")


def test_a_session_leaves_hails_query_plans_out_of_its_log_by_default(monkeypatch):
    monkeypatch.delenv(IR_LOG_ENV, raising=False)
    assert hail_flags() == {NO_IR_LOGGING_FLAG: "1"}
    monkeypatch.setenv(IR_LOG_ENV, "0")
    assert hail_flags() == {NO_IR_LOGGING_FLAG: "1"}


def test_a_site_can_keep_hails_query_plans_in_the_log_for_a_bug_report(monkeypatch):
    monkeypatch.setenv(IR_LOG_ENV, "1")
    assert hail_flags() == {}
