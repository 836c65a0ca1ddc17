"""Helpers every suite shares (unit, integration, faults, bench): one copy of each.

`tests/README.md` names them, and the fixtures of `tests/conftest.py`.
"""
