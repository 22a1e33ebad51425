"""The metric names a PromQL expression reads, and the PromQL expressions a
Grafana dashboard holds, and those expressions with Grafana's variables
filled in; for test_dashboard.py and test_prometheus.py.

A small real PromQL tokenizer, not a regular expression over the text: it
knows strings, numbers, durations, ranges and subqueries ([...]), label
matchers ({...}), grouping label lists (by, without, on, ignoring,
group_left, group_right), keywords, aggregators and functions, and
Grafana's template variables ($var, ${var}, ${var:fmt}, [[var]]). A
selector's metric name is the identifier before its braces, or the value of
a __name__ matcher. Histogram series (_bucket, _count, _sum) are the names
they are: a query on the histogram's bare name reads nothing.
"""
import re

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring",
            "group_left", "group_right", "offset", "bool", "atan2"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar",
               "count", "count_values", "bottomk", "topk", "quantile",
               "limitk", "limit_ratio"}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh",
    "atan", "atanh", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "cos", "cosh", "count_over_time",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "end", "exp", "floor", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_sum",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2",
    "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad",
    "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort",
    "sort_desc", "sqrt", "start", "stddev_over_time", "stdvar_over_time",
    "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year"}
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")

# Order matters: a duration before a number (5m is not 5 then m), a
# Grafana [[var]] before a range's [.
TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_][A-Za-z0-9_]*(?::[^\]]*)?\]\])
  | (?P<duration>(?:[0-9]+(?:ms|[smhdwy]))+(?![A-Za-z0-9_]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>@(){}\[\],:])
""", re.X)


class PromQLError(ValueError):
    pass


def tokens(expr):
    """[(kind, text)] of expr, whitespace and comments dropped."""
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise PromQLError("cannot read %r at %d of %r" % (expr[pos:pos + 10], pos, expr))
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


def unquote(s):
    if s[0] == "`":
        return s[1:-1]
    return re.sub(r"\\(.)", r"\1", s[1:-1])


class Selector:
    """A vector selector: its metric name (None when only __name__ would
    say) and its label matchers [(label, op, value)]."""

    def __init__(self, name, matchers):
        self.name, self.matchers = name, matchers

    def names(self):
        """The metric names it can read."""
        out = [self.name] if self.name else []
        for label, op, value in self.matchers:
            if label != "__name__":
                continue
            if op == "=":
                out.append(value)
            elif op == "=~" and all(NAME.match(v) for v in value.split("|")):
                out.extend(value.split("|"))
            else:
                raise PromQLError("__name__%s%r: metric names a test cannot list" % (op, value))
        if not out:
            raise PromQLError("a selector without a metric name: {%s}" % self.matchers)
        return out


def _matchers(toks, i):
    """Reads the matchers of {...} starting at toks[i] == '{'; returns
    (matchers, index after '}')."""
    out, i = [], i + 1
    while toks[i][1] != "}":
        if toks[i][1] == ",":
            i += 1
            continue
        (k1, label), (k2, op), (k3, value) = toks[i:i + 3]
        if k1 not in ("ident", "string") or k2 != "op" or op not in ("=", "!=", "=~", "!~") \
                or k3 != "string":
            raise PromQLError("bad label matcher %s %s %s" % (label, op, value))
        out.append((unquote(label) if k1 == "string" else label, op, unquote(value)))
        i += 3
    return out, i + 1


def _skip_group(toks, i, open_, close):
    """Index after the bracket group that opens at toks[i]."""
    depth = 0
    while True:
        if i >= len(toks):
            raise PromQLError("unbalanced %s" % open_)
        t = toks[i][1] if toks[i][0] == "op" else None
        depth += (t == open_) - (t == close)
        i += 1
        if depth == 0:
            return i


def _check_balanced(toks, expr):
    stack = []
    for kind, t in toks:
        if kind == "op" and t in "({[":
            stack.append({"(": ")", "{": "}", "[": "]"}[t])
        elif kind == "op" and t in ")}]" and (not stack or stack.pop() != t):
            raise PromQLError("unbalanced %s in %r" % (t, expr))
    if stack:
        raise PromQLError("%s missing in %r" % (stack[-1], expr))


BINARY = {"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "(", ",", "@"}


def selectors(expr):
    """Every vector selector of expr, in order. Raises PromQLError for what
    is not PromQL as this tokenizer knows it: an unknown function, brackets
    that do not pair, a selector where an operator belongs."""
    toks = tokens(expr)
    _check_balanced(toks, expr)
    toks.append(("end", ""))
    out, i = [], 0
    operand = True  # whether a selector may come next
    while toks[i][0] != "end":
        kind, text = toks[i]
        nxt = toks[i + 1][1] if toks[i + 1][0] == "op" else toks[i + 1][0] + ":" + toks[i + 1][1]
        is_selector = (kind == "op" and text == "{") or (
            kind == "ident" and text not in KEYWORDS and text.lower() not in ("inf", "nan")
            and not (nxt == "(" or (text in AGGREGATORS and nxt in ("ident:by", "ident:without"))))
        if is_selector and not operand:
            raise PromQLError("unexpected %s after %s in %r" % (text, toks[i - 1][1], expr))
        if kind == "op" and text == "[":
            i = _skip_group(toks, i, "[", "]")  # a range or subquery: durations
        elif is_selector:
            name = None if text == "{" else text
            m, i = _matchers(toks, i + (name is not None)) if "{" in (text, nxt) else ([], i + 1)
            out.append(Selector(name, m))
        elif kind == "ident" and text in GROUPING:
            i += 1
            if toks[i][1] == "(":  # a label list, not an expression
                i = _skip_group(toks, i, "(", ")")
        elif kind == "ident" and text not in KEYWORDS and text.lower() not in ("inf", "nan") \
                and text not in FUNCTIONS and text not in AGGREGATORS:
            raise PromQLError("unknown function %s()" % text)
        else:
            i += 1
        operand = (kind == "op" and text in BINARY) or (kind == "ident" and (
            text in KEYWORDS or text in FUNCTIONS or text in AGGREGATORS) and not is_selector)
    return out


def metric_names(expr):
    """The set of metric names expr reads."""
    return {n for s in selectors(expr) for n in s.names()}


# ---- Grafana ---------------------------------------------------------------
VARIABLE_QUERY = re.compile(r"^\s*(label_values|query_result|label_names|metrics)\s*\((.*)\)\s*$", re.S)


def _split_top(args):
    """args split at its top-level commas."""
    parts, depth, cur = [], 0, ""
    for t in re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[(){}\[\]]|,|[^"\'(){}\[\],]+', args):
        depth += (t in "({[") - (t in ")}]") if len(t) == 1 else 0
        if t == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += t
    return parts + [cur]


def variable_expr(query):
    """The PromQL inside a Grafana Prometheus variable query, or None:
    label_values(EXPR, label) and query_result(EXPR) hold one;
    label_values(label), label_names() and metrics(regex) none."""
    m = VARIABLE_QUERY.match(query)
    if not m:
        return query  # a plain PromQL query
    fn, args = m.group(1), _split_top(m.group(2))
    if fn == "query_result":
        return m.group(2)
    if fn == "label_values" and len(args) == 2:
        return args[0]
    return None


def dashboard_queries(d):
    """[(where, expr)] of every PromQL expression of a Grafana dashboard:
    each panel's (and each row's panels') targets, each templating
    variable's query, each annotation's expr."""
    out = []

    def panels(ps):
        for p in ps:
            for t in p.get("targets", []):
                if t.get("expr", "").strip():
                    out.append(("panel %s %r query %s" % (p.get("id"), p.get("title"), t.get("refId")),
                                t["expr"]))
            panels(p.get("panels", []))

    panels(d.get("panels", []))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        for text in {q, v.get("definition", "")}:
            e = variable_expr(text) if text.strip() else None
            if e and e.strip():
                out.append(("variable $%s" % v.get("name"), e))
    for a in d.get("annotations", {}).get("list", []):
        if a.get("expr", "").strip():
            out.append(("annotation %r" % a.get("name"), a["expr"]))
    return out


# Grafana's interval and range variables, as a 1 h dashboard gives them;
# promtool only parses, so any duration does.
GRAFANA_RANGES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
                      r"|\[\[([A-Za-z_][A-Za-z0-9_]*)(?::[^\]]*)?\]\]")


def substitute(expr, value=".*", variables=None, ranges=None):
    """expr with Grafana's variables ($v, ${v}, ${v:fmt}, [[v]]) replaced so
    that Prometheus can run it: the interval and range variables by the
    durations of ranges (GRAFANA_RANGES if None), a variable named in
    variables by its value there, any other by value; with value None, any
    other raises PromQLError (a variable the caller has no value for)."""
    ranges = GRAFANA_RANGES if ranges is None else ranges
    variables = variables or {}

    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in ranges:
            return ranges[name]
        if name in variables:
            return variables[name]
        if value is None:
            raise PromQLError("no value for Grafana's %s in %r" % (m.group(), expr))
        return value

    return VARIABLE.sub(one, expr)
