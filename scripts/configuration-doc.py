#!/usr/bin/env python3
"""Writes the settings table of docs/configuration.md from src/config.c.

Every presence.* GUC is defined in presence_define_gucs() in src/config.c,
and its description there is the user documentation.  This reads those
definitions (DefineCustom*Variable calls and the define_ms helper) and
replaces the text between the "settings:begin" and "settings:end" markers
of docs/configuration.md with a table: name, type, default, unit, range,
context, meaning.

    scripts/configuration-doc.py            # rewrite docs/configuration.md
    scripts/configuration-doc.py --check    # exit 1 if it is out of date
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_C = os.path.join(ROOT, "src", "config.c")
PRESENCE_H = os.path.join(ROOT, "src", "presence.h")
DOC = os.path.join(ROOT, "docs", "configuration.md")
BEGIN = "<!-- settings:begin (scripts/configuration-doc.py writes this table from src/config.c) -->"
END = "<!-- settings:end -->"

# Argument positions of each definer: name, description, boot value,
# min, max, context, flags (None: not an argument).
DEFINERS = {
    "DefineCustomStringVariable": ("string", 0, 1, 4, None, None, 5, 6),
    "DefineCustomBoolVariable": ("bool", 0, 1, 4, None, None, 5, 6),
    "DefineCustomIntVariable": ("integer", 0, 1, 4, 5, 6, 7, 8),
    "DefineCustomRealVariable": ("real", 0, 1, 4, 5, 6, 7, 8),
    "DefineCustomEnumVariable": ("enum", 0, 1, 4, None, None, 6, 7),
    # define_ms(name, description, variable, default, min, max): SIGHUP, ms
    "define_ms": ("integer", 0, 1, 3, 4, 5, None, None),
}
UNITS = {"GUC_UNIT_MS": "ms", "GUC_UNIT_S": "s", "GUC_UNIT_MIN": "min",
         "GUC_UNIT_BYTE": "B", "GUC_UNIT_KB": "kB", "GUC_UNIT_MB": "MB"}
CONTEXTS = {"PGC_POSTMASTER": "postmaster", "PGC_SIGHUP": "sighup",
            "PGC_SUSET": "superuser", "PGC_USERSET": "user", "PGC_BACKEND": "backend"}


def split_arguments(text):
    """Top-level comma-separated arguments of a call, strings kept whole."""
    args, depth, current, i = [], 0, "", 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            current += text[i:j + 1]
            i = j + 1
            continue
        if c in "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += c
        i += 1
    args.append(current.strip())
    return args


def string_value(arg):
    """A C string literal (adjacent literals concatenated), or None for NULL."""
    if arg == "NULL":
        return None
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', arg)
    return "".join(parts).replace('\\"', '"').replace("\\\\", "\\")


def number_value(arg, constants):
    expression = re.sub(r"[A-Z_][A-Z0-9_]*", lambda m: str(constants[m.group(0)]), arg)
    if not re.fullmatch(r"[0-9 +*/().-]+", expression):
        raise ValueError("cannot evaluate %r" % arg)
    return int(eval(expression))  # digits and operators only, checked above


def with_unit(value, unit):
    """A value as postgresql.conf would best say it: 30000 ms is 30s."""
    if unit in ("ms", "s"):
        ms = value if unit == "ms" else value * 1000
        for name, size in (("d", 86400000), ("h", 3600000), ("min", 60000), ("s", 1000), ("ms", 1)):
            if ms and ms % size == 0 and (unit == "ms" or size >= 1000):
                return "%d%s" % (ms // size, name)
        return "%d%s" % (value, unit)
    if unit == "B" and value and value % 1024 == 0:
        return "%dkB" % (value // 1024)
    return "%d%s" % (value, unit) if unit else str(value)


def read_settings():
    source = open(CONFIG_C).read()
    constants = {"INT_MAX": 2147483647}
    for name, value in re.findall(r"#define\s+(\w+)\s+(\d+)", open(PRESENCE_H).read()):
        constants[name] = int(value)
    body = source[source.index("presence_define_gucs(void)"):]
    settings = []
    for match in re.finditer(r"\b(DefineCustom\w+Variable|define_ms)\s*\(", body):
        start, depth, i = match.end(), 1, match.end()
        while depth:
            if body[i] == '"':
                i += 1
                while body[i] != '"':
                    i += 2 if body[i] == "\\" else 1
            elif body[i] == "(":
                depth += 1
            elif body[i] == ")":
                depth -= 1
            i += 1
        args = split_arguments(body[start:i - 1])
        kind, name_at, desc_at, boot_at, min_at, max_at, context_at, flags_at = DEFINERS[match.group(1)]
        flags = args[flags_at] if flags_at is not None else "GUC_UNIT_MS"
        unit = next((u for f, u in UNITS.items() if f in flags), "")
        context = CONTEXTS[args[context_at]] if context_at is not None else "sighup"
        boot = args[boot_at]
        if kind == "string":
            default = "'%s'" % string_value(boot)
        elif kind == "bool":
            default = "on" if boot == "true" else "off"
        else:
            default = with_unit(number_value(boot, constants), unit)
        limits = ""
        if min_at is not None:
            low, high = (number_value(args[min_at], constants), number_value(args[max_at], constants))
            limits = "%s … %s" % (with_unit(low, unit), with_unit(high, unit))
        notes = []
        if "GUC_SUPERUSER_ONLY" in flags:
            notes.append("superusers only")
        if "GUC_NO_SHOW_ALL" in flags:
            notes.append("hidden from SHOW ALL and pg_settings")
        settings.append((string_value(args[name_at]), kind, default, unit, limits, context,
                         string_value(args[desc_at]), notes))
    return settings


def table(settings):
    lines = ["| setting | type | default | unit | range | context | meaning |",
             "|---|---|---|---|---|---|---|"]
    for name, kind, default, unit, limits, context, description, notes in settings:
        meaning = description.replace("|", "\\|")
        if notes:
            meaning += " *(%s)*" % "; ".join(notes)
        lines.append("| `%s` | %s | `%s` | %s | %s | %s | %s |" % (
            name, kind, default, unit, limits, context, meaning))
    return "\n".join(lines)


def main():
    document = open(DOC).read()
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    updated = head + BEGIN + "\n" + table(read_settings()) + "\n" + END + tail
    if "--check" in sys.argv[1:]:
        if updated != document:
            sys.exit("docs/configuration.md is out of date: run scripts/configuration-doc.py")
        return
    open(DOC, "w").write(updated)


if __name__ == "__main__":
    main()
