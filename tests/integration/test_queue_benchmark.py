"""``manage.py benchqueue`` keeps working (figures are printed, never asserted)."""

import pytest
from django.core.management import CommandError, call_command

from tasks import queue
from tasks.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def test_benchqueue_runs_engine_and_bare_loops_and_cleans_up(capsys):
    call_command("benchqueue", tasks=20, workers=2, batches="1,5")
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "5"]
    assert all(row[3].endswith("%") and len(row) == 6 for row in rows)
    assert not Task.objects.filter(type="bench.noop").exists()


def test_benchqueue_refuses_a_database_with_unfinished_tasks():
    queue.enqueue(type="real work")
    with pytest.raises(CommandError, match="scratch database"):
        call_command("benchqueue", tasks=10)
    assert Task.objects.filter(type="real work", status="QUEUED").count() == 1


@pytest.mark.parametrize(
    "options", [{"tasks": 0}, {"workers": 0}, {"batches": "1,x"}, {"batches": "0"}]
)
def test_benchqueue_refuses_bad_arguments(options):
    with pytest.raises(CommandError, match="at least 1|whole numbers"):
        call_command("benchqueue", **options)
