"""HTML forms as a browser sees them, read with the standard library's parser.

Enough of HTML for the Django admin: the fields a browser would submit
(inputs, checked checkboxes and radios, selected options, textareas), the
submit buttons, and each select's options with their labels.
"""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

#: Input types that a browser doesn't submit as plain fields.
_NOT_FIELDS = {"submit", "button", "reset", "image", "file"}


@dataclasses.dataclass
class Option:
    value: str
    label: str
    selected: bool


@dataclasses.dataclass
class Form:
    """One ``<form>``: what submitting it unchanged would send."""

    id: str | None
    action: str | None
    method: str
    #: Name → values, in document order (a multiple select has several).
    fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: Submit buttons' name → value.
    buttons: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Select name → every option, selected or not.
    options: dict[str, list[Option]] = dataclasses.field(default_factory=dict)

    def set(self, name: str, *values: str) -> None:
        """Replace a field's values (none: leave it out, like an unchecked box)."""
        if values:
            self.fields[name] = list(values)
        else:
            self.fields.pop(name, None)

    def option_values(self, name: str, *labels: str) -> list[str]:
        """The values of the options of select ``name`` with these labels."""
        by_label = {option.label: option.value for option in self.options[name]}
        missing = [label for label in labels if label not in by_label]
        assert not missing, f"no option {missing} in <select name={name!r}>"
        return [by_label[label] for label in labels]

    def data(self, button: str | None = None) -> dict[str, list[str]]:
        """The submission, as for ``requests``, pressing ``button`` if given."""
        data = {name: list(values) for name, values in self.fields.items()}
        if button is not None:
            assert button in self.buttons, f"no submit button {button!r}: {self.buttons}"
            data[button] = [self.buttons[button]]
        return data


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._select: tuple[str, bool, bool] | None = None  # name, disabled, multiple
        self._option: tuple[dict[str, str | None], list[str]] | None = None
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self._form = Form(
                id=attributes.get("id"),
                action=attributes.get("action"),
                method=(attributes.get("method") or "get").lower(),
            )
            self.forms.append(self._form)
            return
        form = self._form
        if form is None:
            return
        name = attributes.get("name")
        disabled = "disabled" in attributes
        if tag == "input" and name and not disabled:
            kind = (attributes.get("type") or "text").lower()
            value = attributes.get("value")
            if kind == "submit":
                form.buttons[name] = value or ""
            elif kind in ("checkbox", "radio"):
                if "checked" in attributes:
                    form.fields.setdefault(name, []).append("on" if value is None else value)
            elif kind not in _NOT_FIELDS:
                form.fields.setdefault(name, []).append(value or "")
        elif tag == "button" and name and (attributes.get("type") or "submit") == "submit":
            form.buttons[name] = attributes.get("value") or ""
        elif tag == "select" and name:
            self._select = (name, disabled, "multiple" in attributes)
            form.options.setdefault(name, [])
        elif tag == "option" and self._select is not None:
            self._end_option()
            self._option = (attributes, [])
        elif tag == "textarea" and name and not disabled:
            self._textarea = (name, [])

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option[1].append(data)
        elif self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "option":
            self._end_option()
        elif tag == "select":
            self._end_option()
            self._end_select()
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            name, parts = self._textarea
            # A newline right after <textarea> is not part of the value.
            text = "".join(parts)
            self._form.fields.setdefault(name, []).append(text.removeprefix("\n"))
            self._textarea = None

    def _end_option(self) -> None:
        if self._option is None or self._select is None or self._form is None:
            self._option = None
            return
        attributes, parts = self._option
        self._option = None
        label = " ".join("".join(parts).split())
        value = attributes.get("value")
        option = Option(
            value=label if value is None else value,
            label=label,
            selected="selected" in attributes,
        )
        name, disabled, _ = self._select
        self._form.options[name].append(option)
        if option.selected and not disabled:
            self._form.fields.setdefault(name, []).append(option.value)

    def _end_select(self) -> None:
        if self._select is not None and self._form is not None:
            name, disabled, multiple = self._select
            options = self._form.options[name]
            # A single select with nothing selected submits its first option.
            if not disabled and not multiple and options and name not in self._form.fields:
                self._form.fields[name] = [options[0].value]
        self._select = None


def parse_forms(html: str) -> list[Form]:
    """Every form of ``html``, in document order."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def find_form(html: str, form_id: str | None = None, *, has_field: str | None = None) -> Form:
    """The form with this id, or the first one with a field of this name."""
    forms = parse_forms(html)
    for form in forms:
        if form_id is not None and form.id != form_id:
            continue
        if has_field is not None and has_field not in form.fields:
            continue
        return form
    found = [(form.id, sorted(form.fields)) for form in forms]
    raise AssertionError(f"no form id={form_id!r} with field {has_field!r} in the page: {found}")
