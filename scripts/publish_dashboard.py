"""Upload the dashboard's static files (web/dashboard/) to the artifacts bucket, under site/dashboard/.

Run after ``sam deploy``: the deployed DashboardApiFunction serves the page from there (its package holds
only its own code). Usage: ``python scripts/publish_dashboard.py <ArtifactsBucketName output>``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "depu"))

from depu.dashboard import site  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    uploaded = site.publish(ROOT / "web" / "dashboard", bucket=argv[0])
    print(f"uploaded {len(uploaded)} files to s3://{argv[0]}/{site.SITE_PREFIX}: {', '.join(uploaded)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
