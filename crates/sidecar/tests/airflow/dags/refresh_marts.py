"""DAGs the receiver tests trigger through Airflow's REST API: one per test scenario, so
each scenario counts its own runs. They never run a task: no scheduler is started, and a
triggered run stays queued, which is all the tests read back."""

from datetime import datetime

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.empty import EmptyOperator
except ImportError:  # Airflow 2
    from airflow.operators.empty import EmptyOperator

for scenario in ("happy", "crash", "timeout", "expiry"):
    with DAG(
        f"refresh_marts_{scenario}",
        start_date=datetime(2024, 1, 1),
        schedule=None,
        catchup=False,
    ):
        EmptyOperator(task_id="noop")
