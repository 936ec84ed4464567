"""Many students at once: browser sessions that each choose their own settings and explore.

Used by tests/browser/test_many_users.py (are the sessions isolated, does any page fail?) and by
bench/bench_many_users.py (what do they cost a training run?). One Chromium, one browser context
per student, driven in rounds: every student starts an action, then every student's page is
waited for, so the server really has all sessions' script runs in flight at the same time.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from core.architecture import CIFAR_PRESET_DEPTHS, IMAGENET_DEPTHS
from core.models import canonical_name, cifar_config, imagenet_config
from tests.browser.helpers import (
    PAGE_KEYS,
    TIMEOUT_MS,
    app_url,
    choose_radio,
    errors_on_page,
    heading,
    main,
    nav_link,
    open_app,
    sidebar,
    tr,
    url_path,
    wait_for_page,
    wait_idle,
    widget,
)

# The pages a student visits after choosing a network, in order. Each student starts at a
# different point of the list, so all pages are in use at once.
TOUR = ("gradients", "finetuning", "training", "glossary", "tta", "home")


@dataclass
class Student:
    """One browser session and the settings it chose."""

    number: int
    lang: str
    family: str  # "imagenet" or "cifar"
    depth: int
    page: object = None
    context: object = None
    problems: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        config = imagenet_config(self.depth) if self.family == "imagenet" else cifar_config(self.depth)
        return canonical_name(config)

    @property
    def depth_label(self) -> str:
        """The option text of the depth selectbox."""
        if self.family == "imagenet":
            return f"ResNet-{self.depth}"
        return tr(self.lang, "arch.cifar_preset", depth=self.depth, n=(self.depth - 2) // 6)

    def tour(self) -> list[str]:
        start = self.number % len(TOUR)
        return list(TOUR[start:] + TOUR[:start])


def background_run_config(epochs: int) -> dict:
    """A training run for students to explore around: CIFAR ResNet-8 on the embedded digits.

    Early stopping is off, so it trains for all `epochs` unless cancelled.
    """
    return {
        "architecture": cifar_config(8).to_dict(),
        "schedule": None,
        "epochs": epochs,
        "data": {"source": "digits"},
        "weights": {"kind": "none"},
        "train": {"batch_size": 32, "log_every_steps": 1, "early_stopping": {"patience": None}},
    }


def make_students(count: int) -> list[Student]:
    """`count` students with pairwise different settings: language alternates, depth differs."""
    choices = [("imagenet", depth) for depth in IMAGENET_DEPTHS] + [("cifar", depth) for depth in CIFAR_PRESET_DEPTHS[:-1]]
    if count > len(choices):
        raise ValueError(f"at most {len(choices)} students have different networks, asked for {count}")
    return [Student(number=index, lang=("es", "en")[index % 2], family=family, depth=depth)
            for index, (family, depth) in enumerate(choices[:count])]


def open_sessions(browser, students: list[Student], base_url: str) -> None:
    for student in students:
        student.context = browser.new_context(viewport={"width": 1280, "height": 900})
        student.page = student.context.new_page()
        student.page.set_default_timeout(TIMEOUT_MS)
    # NOTE: the first student opens "/" first and alone. Until "/" has been opened once since
    # the server started, a page's own URL gets raw file names in the sidebar, which
    # tests/browser/test_deep_links.py covers. Every other load is started before any is
    # waited for, so their first script runs overlap.
    first, others = students[0], students[1:]
    open_app(first.page, base_url, "", lang=first.lang)
    open_app(first.page, base_url, "architecture", lang=first.lang)
    for student in others:
        student.page.goto(app_url(base_url, "architecture", student.lang), wait_until="commit", timeout=TIMEOUT_MS)
    for student in others:
        wait_for_page(student.page, "architecture", student.lang)


def close_sessions(students: list[Student]) -> None:
    for student in students:
        if student.context is not None:
            student.context.close()
            student.context = None


def record_errors(student: Student, where: str) -> None:
    found = errors_on_page(student.page)
    if found:
        student.problems.append(f"student {student.number} ({student.lang}) on {where}: {found}")


def choose_networks(students: list[Student]) -> None:
    """Each student picks their own family and depth on Arquitectura, all at about the same time."""
    for student in students:
        if student.family == "cifar":
            choose_radio(student.page, tr(student.lang, "arch.family_cifar"), scope=sidebar(student.page))
    for student in students:  # start every choice, then wait for all of them
        label = tr(student.lang, "arch.depth" if student.family == "imagenet" else "arch.cifar_depth")
        box = widget(student.page, "stSelectbox", label, sidebar(student.page))
        box.click()
        student.page.get_by_role("option", name=student.depth_label, exact=True).click()
    for student in students:
        heading(student.page, student.model_name).wait_for(timeout=TIMEOUT_MS)
        wait_idle(student.page)
        record_errors(student, "architecture")


def start_visit(student: Student, path: str) -> None:
    """Click `path` in the sidebar without waiting for the page."""
    link = nav_link(student.page, path)
    label = tr(student.lang, PAGE_KEYS[path][0])
    if label not in link.inner_text():
        student.problems.append(f"student {student.number}: the sidebar link to {path} is not {label!r}")
    link.click()


def finish_visit(student: Student, path: str) -> None:
    """Wait for `path` and check what this student's own settings should show there."""
    page, lang = student.page, student.lang
    page.wait_for_url(re.compile(rf"/{url_path(path)}(\?|$)"), timeout=TIMEOUT_MS)
    heading(page, tr(lang, PAGE_KEYS[path][1])).wait_for(timeout=TIMEOUT_MS)
    body = main(page)
    if path == "finetuning":
        body.get_by_text(tr(lang, "ft.intro", model=student.model_name)).wait_for(timeout=TIMEOUT_MS)
    elif path == "training":
        body.get_by_text(tr(lang, "train.arch_used", name=student.model_name).replace("**", "")).first.wait_for(
            timeout=TIMEOUT_MS)
    elif path == "architecture":
        heading(page, student.model_name).wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    if path == "glossary":
        search = widget(page, "stTextInput", tr(lang, "glossary.search"), body).locator("input")
        search.fill(tr(lang, "glossary.skip_connection_name"))
        search.press("Enter")
        heading(page, tr(lang, "glossary.skip_connection_name")).wait_for(timeout=TIMEOUT_MS)
        wait_idle(page)
    record_errors(student, path)


def isolation_problems(student: Student) -> list[str]:
    """What this student's session shows now that does not match the student's own settings."""
    page, lang = student.page, student.lang
    problems = []
    badge = tr(lang, "common.sidebar_model", name=student.model_name)
    if sidebar(page).get_by_text(badge, exact=True).count() != 1:
        shown = sidebar(page).locator("[data-testid='stCaptionContainer']").all_inner_texts()
        problems.append(f"student {student.number}: sidebar should say {badge!r}, shows {shown}")
    if heading(page, tr(lang, "arch.title")).count() != 1:
        problems.append(f"student {student.number}: Arquitectura title not in {lang}")
    if heading(page, student.model_name).count() != 1:
        shown = main(page).locator("h3").all_inner_texts()
        problems.append(f"student {student.number}: expected network {student.model_name}, page shows {shown}")
    return problems


def explore(students: list[Student], rounds: int | None = None, until: float | None = None) -> int:
    """Walk every student through their tour, one page per round, all students in parallel.

    Stops after `rounds` rounds or once time.monotonic() passes `until` (checked between
    rounds), always ending on Arquitectura. Returns the number of page visits made.
    """
    visits = 0
    round_number = 0
    while (rounds is None or round_number < rounds) and (until is None or time.monotonic() < until):
        paths = [student.tour()[round_number % len(TOUR)] for student in students]
        for student, path in zip(students, paths):
            start_visit(student, path)
        for student, path in zip(students, paths):
            finish_visit(student, path)
        visits += len(students)
        round_number += 1
    for student in students:
        start_visit(student, "architecture")
    for student in students:
        finish_visit(student, "architecture")
    return visits
