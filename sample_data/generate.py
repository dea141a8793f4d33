"""Deterministic generator of realistic-looking LLM chat interactions (ingest NDJSON format).

Standard library only, so it runs anywhere::

    python sample_data/generate.py --n 3000 --seed 7 -o sample_data/interactions.ndjson
    python sample_data/generate.py --n 100000 --seed 1 -o - | gzip > /tmp/big.ndjson.gz

or from Python::

    from sample_data.generate import generate
    for item in generate(1000, seed=3):
        ...

The same ``n``, ``seed``, ``start`` and ``days`` always give the same interactions, and the
CLI's output is byte-identical across runs. Every interaction has a stable ``id``
(``smp-<seed>-<index:07d>``) so re-importing a file is idempotent.

What is in it: 7 use cases with their own vocabulary, system prompts, models and tools;
long-tailed message lengths (lognormal word counts) and turn counts (1-20, mostly 1-3);
sessions of 1-5 interactions that continue the same conversation (including agent loops:
a tool-call completion followed by the interaction that consumes the tool results);
~10% with tool calls, ~5% multi-part content with images, ~2% errors, ~10% feedback,
a little unicode (accents, CJK, emoji) and a few empty contents; labels with low
(``project``, ``env``), medium (``topic``) and high (``customer_id``) cardinality.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_START = datetime(2026, 11, 1, tzinfo=UTC)


def _words(text: str) -> list[str]:
    """Comma- or newline-separated vocabulary (so phrases keep their spaces)."""
    return [w.strip() for w in text.replace("\n", ",").split(",") if w.strip()]


# -- vocabulary ----------------------------------------------------------------------------

FUNCTION_WORDS = _words(
    """the, a, an, to, of, and, in, for, is, it, that, on, with, this, my, you, I, we, can, be,
    not, or, are, have, at, your, as, if, but, so, do, from, by, will, there, what, when, how,
    should, would, our, they, all, any, was, just, about, more, also, then, which, after, before,
    because, only, still, than, into, its, their, one, some, other, does, did, has, had, could"""
)

GENERAL_WORDS = _words(
    """account, issue, problem, question, update, request, help, time, day, week, month, order,
    customer, team, email, message, information, details, support, service, system, data,
    process, price, cost, change, version, report, review, status, number, reference, note,
    step, option, setting, feature, error, fix, check, confirm, explain, send, need, want, know,
    think, looks, working, again, already, today, tomorrow, yesterday, soon, quickly, manager,
    policy, document, page, link, file, list, summary, example, case, reason, result, available,
    possible, correct, different, important, new, old, recent, current, previous, next, last,
    first, second, final, simple, clear, detailed, short, quick, actually, probably, exactly,
    usually, unfortunately, currently, instead, however, although, therefore, otherwise,
    Monday, Friday, morning, afternoon, colleague, department, office, company, project,
    deadline, priority, approval, feedback, meeting, call, phone, website, portal, app, login,
    password, address, location, size, model, quality, problem, a few, a lot of, as soon as
    possible, let me know, thanks, thank you, in advance, I think, it seems, right now,
    for example, at the moment, by the way, in general, on the other hand, step by step"""
)

DOMAINS: dict[str, list[str]] = {
    "support": _words(
        """cordless drill, impact driver, battery pack, charger, torque setting, keyless chuck,
        angle grinder, circular saw, blade guard, warranty claim, serial number, order number,
        tracking number, refund, return label, replacement part, carbon brushes, overheating,
        firmware, spindle lock, drill bit, hammer mode, LED indicator, invoice, shipping,
        delivery, courier, damaged package, 18V battery, 5.0Ah, brushless motor, gearbox,
        clutch ring, safety switch, depth stop, dust extraction, laser level, tripod,
        calibration, stud finder, workshop, service center, spare parts, pressure washer,
        air compressor, hose fitting, nail gun, jigsaw, sanding pad, RMA, support ticket,
        store credit, exchange, receipt, proof of purchase, out of stock, backorder,
        estimated delivery, express shipping, pickup point, voucher code, loyalty points,
        the red light blinks, it stopped charging, smells like burning, makes a grinding noise,
        the trigger is stuck, missing screws, wrong colour, arrived broken, two-year warranty"""
    ),
    "rag-bot": _words(
        """knowledge base, article, datasheet, operating manual, section 4.2, specification,
        maintenance interval, lubrication, hydraulic press, CNC lathe, spindle speed, feed rate,
        tolerance, ISO 9001, safety data sheet, lockout tagout, PPE, operating temperature,
        load capacity, torque wrench, calibration certificate, ball bearing, coolant,
        vibration, proximity sensor, PLC, firmware update, fault code E42, conveyor belt,
        motor current, rated voltage, duty cycle, IP65, ambient humidity, thermal cutout,
        pneumatic cylinder, solenoid valve, pressure relief valve, flow rate, bar, Nm, rpm,
        service bulletin, part number, exploded view, bill of materials, installation guide,
        commissioning, wiring diagram, emergency stop, interlock, guard door, preventive
        maintenance, root cause, downtime, shift supervisor, according to the manual,
        as described in, the documentation says, see the table below, source"""
    ),
    "code-assist": _words(
        """function, variable, exception, stack trace, unit test, pull request, merge conflict,
        dependency, import error, null pointer, async, await, database query, index, migration,
        endpoint, REST API, JSON payload, regex, Docker image, Kubernetes pod, CI pipeline,
        linter, type hint, refactor, performance, memory leak, race condition, timeout,
        pandas DataFrame, SQL join, git rebase, environment variable, config file, logging,
        decorator, generator, closure, callback, promise, TypeScript interface,
        React component, useEffect hook, build error, segfault, compiler, borrow checker,
        lifetime, trait, cargo, pip, virtualenv, pytest fixture, mock, coverage, flaky test,
        off-by-one, edge case, O(n log n), hash map, linked list, recursion, thread pool,
        connection pool, ORM, schema, foreign key, transaction, deadlock, retry with backoff,
        rate limiter, cache invalidation, serialization, UTF-8, timezone, datetime, f-string,
        list comprehension, it throws, it returns None, works on my machine, in production"""
    ),
    "sales-email": _words(
        """prospect, follow-up, demo, pricing tier, discount, quarterly business review,
        renewal, contract, decision maker, pipeline, lead, cold email, subject line,
        call to action, calendar invite, case study, ROI, onboarding, free trial,
        enterprise plan, procurement, budget, stakeholder, proposal, webinar, newsletter,
        introduction, testimonial, pain point, value proposition, competitor, upsell, churn,
        trade show, booth, partnership, integration, annual plan, seat licenses, security review,
        SOC 2 report, pilot project, champion, next steps, quick call, circle back,
        happy to help, looking forward, warm regards, in touch, tailored, personalised,
        friendly tone, formal tone, shorter version, add a P.S., mention the discount"""
    ),
    "hr-policy": _words(
        """parental leave, vacation days, sick leave, remote work policy, expense report,
        reimbursement, performance review, probation period, notice period, termination,
        severance, benefits, health insurance, pension plan, overtime, working hours,
        code of conduct, harassment, grievance procedure, non-disclosure agreement,
        non-compete clause, employment contract, GDPR, personal data, data retention, payroll,
        salary band, promotion, onboarding checklist, laptop, training budget, relocation,
        visa sponsorship, public holiday, collective agreement, works council, compliance,
        whistleblower, jurisdiction, liability, indemnification, clause, amendment, part-time,
        sabbatical, bereavement leave, jury duty, home office stipend, travel policy,
        per diem, employee handbook, manager approval, HR business partner, legal team,
        according to the handbook, under section 7, the policy states, local labour law"""
    ),
    "travel-agent": _words(
        """flight, layover, boarding pass, online check-in, baggage allowance, carry-on, hotel,
        reservation, booking reference, cancellation policy, refund, itinerary, visa,
        passport, travel insurance, train, rental car, airport transfer, window seat,
        aisle seat, economy, business class, frequent flyer, miles, upgrade, delay,
        connection, gate, terminal, double room, breakfast included, late checkout,
        city centre, museum, restaurant, day trip, ferry, e-ticket, fare class,
        non-refundable, change fee, direct flight, red-eye, jet lag, conference, team offsite,
        Lisbon, Berlin, Barcelona, Amsterdam, Copenhagen, Singapore, New York, Chicago,
        Toronto, Dublin, Vienna, Prague, Oslo, Helsinki, Milan, Seoul"""
    ),
    "summarizer": _words(
        """meeting notes, action items, quarterly results, revenue, growth, market share, board,
        strategy, announcement, press release, incident report, root cause, timeline,
        mitigation, customer feedback, survey, findings, recommendation, risk, milestone,
        budget, forecast, analysis, research paper, abstract, methodology, conclusion,
        regulation, stakeholders, headcount, hiring plan, roadmap, launch, postmortem,
        latency spike, outage, on-call, escalation, owner, due date, decision, open question,
        key takeaway, year over year, gross margin, operating costs, supply chain, inventory,
        shipment, backlog, KPI, OKR, retrospective, sprint, release notes, changelog"""
    ),
}

STARTERS = _words(
    """I have a problem with the, Could you check the, We need to update the,
    Please note that the, It seems that the, You can reset the, Make sure the,
    The issue is that the, According to the, Is there a way to change the, Why does the,
    When I try to use the, As mentioned earlier the, In this case the, If the, After the,
    To fix this check the, First check the, Then the, Unfortunately the,
    I would recommend the, The main difference is the, This usually means the,
    Our records show that the, What happens if the, Do you know if the, My colleague said the,
    We noticed that the, Can you explain the, I'm not sure about the, Here is the,
    Let me look into the, You should also review the, Thanks for confirming the,
    I just want to know if the, Last week the, Since the update the, Regarding the"""
)

# Code-switching vocabulary for the non-English fraction.
LANG_WORDS: dict[str, list[str]] = {
    "de": _words(
        """bitte, danke, Bestellung, Rückgabe, Gerät, Akku, Ladegerät, Lieferung, Rechnung,
        Garantie, größer, schön, möglich, Überprüfung, Kündigung, Urlaub, Straße, München,
        Grüße, für, über, können, müssen, Frühstück, leider, schon, noch, nicht, und, mit"""
    ),
    "fr": _words(
        """merci, bonjour, commande, remboursement, livraison, facture, garantie, déjà, très,
        problème, réservation, hôtel, congé, employé, sécurité, où, à, être, prévu, délai,
        s'il vous plaît, pourquoi, aujourd'hui, reçu, câble, chargé, et, avec, pour, mais"""
    ),
    "es": _words(
        """gracias, por favor, pedido, devolución, envío, factura, garantía, también, está, año,
        señor, reserva, vacaciones, contraseña, información, cómo, qué, mañana, batería,
        cargador, y, con, para, pero, todavía, España, número"""
    ),
    "pt": _words(
        """obrigado, pedido, devolução, entrega, fatura, garantia, não, está, informação,
        reserva, férias, São Paulo, ação, você, bateria, carregador, e, com, para, mas, ainda"""
    ),
    "ja": _words(
        """ありがとうございます, 注文, 返品, 配送, 請求書, 保証, バッテリー, 充電器, 予約, ホテル,
        東京, 大阪, 確認, お願いします, 問題, 休暇, 会議, 要約, すみません, できますか"""
    ),
    "zh": _words(
        """谢谢, 订单, 退货, 发票, 电池, 酒店, 预订, 上海, 请, 问题, 航班, 会议, 总结, 可以吗"""
    ),
}
LANGS = ["en", "de", "fr", "es", "pt", "ja", "zh"]
LANG_WEIGHTS = [92, 2.5, 2, 1.3, 0.8, 0.8, 0.6]

EMOJI = ["🙏", "😊", "👍", "🔥", "😡", "🚀", "✅", "🤔", "😅", "❤️", "⚠️", "🛠️", "✈️", "📎"]

FIRST_NAMES = _words(
    """Anna, Ben, Chloé, David, Elif, Farah, Grace, Hiro, Ines, Jonas, Katarzyna, Liam, Maria,
    Nikolai, Olivia, Pedro, Quentin, Rosa, Sven, Tomás, Uma, Viktor, Wei, Ximena, Yusuf, Zoë,
    José, François, Søren, Łukasz, Björn, Ana, Mateo, Priya, Kenji, Amara, Noah, Lea"""
)
LAST_NAMES = _words(
    """Smith, Müller, García, Rossi, Nowak, Kowalski, Dubois, Jensen, Tanaka, Kim, Silva,
    O'Brien, Novák, Johansson, Schmidt, Martin, Fernández, Ivanova, Nguyen, Patel, Weber"""
)
COMPANIES = _words(
    """Acme Tools, Northwind, Globex, Initech, Umbrella Logistics, Stark Fabrication,
    Wayne Components, Hooli, Vandelay Industries, Soylent Foods, Tyrell Systems,
    Kraków Machining, Zürich Precision AG, Bäckerei Schulz, Lumière SARL"""
)
CITIES = _words(
    """Lisbon, Berlin, München, Zürich, Kraków, São Paulo, Reykjavík, Barcelona, Paris,
    Amsterdam, Copenhagen, Singapore, New York, Chicago, Toronto, London, Dublin, Vienna,
    Prague, Oslo, Helsinki, Milan, Seoul, 東京, 大阪, Québec, Málaga, Göteborg"""
)
AIRPORTS = ["LIS", "BER", "MUC", "ZRH", "KRK", "GRU", "KEF", "BCN", "CDG", "AMS", "CPH", "SIN"]
AIRPORTS += ["JFK", "ORD", "YYZ", "LHR", "DUB", "VIE", "PRG", "OSL", "HEL", "MXP", "ICN", "NRT"]

# -- per use case setup --------------------------------------------------------------------

MODELS = ["llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "mistral-small", "gpt-4o-mini"]
# ms per generated token and median time to first token, per model
MODEL_SPEED = {
    "llama-3.1-8b": (7.0, 180.0),
    "llama-3.1-70b": (22.0, 420.0),
    "qwen2.5-7b": (8.0, 200.0),
    "mistral-small": (12.0, 260.0),
    "gpt-4o-mini": (10.0, 350.0),
}

USE_CASES: dict[str, dict[str, Any]] = {
    "support": {
        "weight": 30,
        "project": "helpdesk",
        "models": {"llama-3.1-8b": 50, "llama-3.1-70b": 30, "gpt-4o-mini": 20},
        "tool_p": 0.16,
        "image_p": 0.06,
        "topics": """battery, charger, warranty-claim, refund, shipping-delay, damaged-item,
            return-label, order-status, firmware, overheating, spare-parts, invoice, exchange,
            account-login, voucher, loyalty-points, drill, grinder, saw, compressor""",
        "system": [
            "You are a friendly customer support assistant for Acme Tools, a maker of "
            "professional power tools. Answer concisely, never invent order details, and use "
            "the tools to look up orders and warranties. Escalate safety issues to a human.",
            "You are Acme Tools' support agent. Be polite and brief. If the customer mentions "
            "smoke, sparks or burning smells, tell them to stop using the tool immediately.",
        ],
        "user_open": [
            "Hi,",
            "Hello,",
            "Hi there, I bought a cordless drill last month and",
            "My order hasn't arrived and",
            "Quick question:",
            "I need help with my return,",
            "Hey, the battery pack",
            "",
        ],
        "asst_open": [
            "Thanks for reaching out!",
            "I'm sorry to hear that.",
            "Sure, I can help with that.",
            "Thanks for the details.",
            "I understand how frustrating that is.",
        ],
    },
    "rag-bot": {
        "weight": 20,
        "project": "knowledge",
        "models": {"llama-3.1-70b": 50, "qwen2.5-7b": 30, "mistral-small": 20},
        "tool_p": 0.10,
        "image_p": 0.02,
        "topics": """maintenance, safety, calibration, fault-codes, lubrication, installation,
            spare-parts, hydraulics, pneumatics, electrical, specifications, lockout-tagout,
            cnc, conveyor, sensors, firmware, training, quality""",
        "system": [
            "You answer questions from plant technicians using only the provided context from "
            "the maintenance knowledge base. Cite sources as [doc-id]. If the answer is not in "
            "the context, say you don't know.",
            "You are a retrieval-augmented assistant for the engineering wiki. Quote the "
            "relevant section, keep answers under 150 words and always list the sources.",
        ],
        "user_open": [
            "What is",
            "How often should we",
            "Where can I find",
            "Is it safe to",
            "According to the manual,",
            "",
        ],
        "asst_open": [
            "According to the documentation,",
            "Based on the provided context,",
            "The manual states that",
            "Short answer:",
        ],
    },
    "code-assist": {
        "weight": 15,
        "project": "devtools",
        "models": {"qwen2.5-7b": 40, "gpt-4o-mini": 35, "llama-3.1-70b": 25},
        "tool_p": 0.08,
        "image_p": 0.05,
        "topics": """python, typescript, rust, sql, docker, kubernetes, git, testing, ci,
            performance, debugging, refactoring, api-design, pandas, react, regex, async,
            packaging, security, logging""",
        "system": [
            "You are an expert software engineer. Give correct, minimal code with a short "
            "explanation. Prefer the standard library. Use fenced code blocks.",
            "You are a coding assistant inside the IDE. The user's repository is Python 3.11 "
            "with pytest. Answer with diffs when editing files.",
        ],
        "user_open": [
            "Why does this",
            "How do I",
            "Can you refactor",
            "I get this error:",
            "Write a function that",
            "Explain",
            "",
        ],
        "asst_open": [
            "The problem is",
            "Here's a version that works:",
            "You can do it like this:",
            "Good question.",
            "The error means",
        ],
    },
    "sales-email": {
        "weight": 8,
        "project": "growth",
        "models": {"mistral-small": 60, "llama-3.1-8b": 40},
        "tool_p": 0.0,
        "image_p": 0.0,
        "topics": """cold-outreach, follow-up, renewal, upsell, event-invite, demo-request,
            pricing, win-back, intro, thank-you, case-study, partnership""",
        "system": [
            "You write short, personalised B2B sales emails for Acme Tools. Keep them under "
            "120 words, with one clear call to action. No exaggerated claims.",
        ],
        "user_open": [
            "Write a follow-up email to",
            "Draft a cold email for",
            "Make this shorter:",
            "Rewrite in a friendlier tone:",
            "Write a renewal reminder for",
        ],
        "asst_open": ["Subject:"],
    },
    "hr-policy": {
        "weight": 7,
        "project": "people-ops",
        "models": {"llama-3.1-70b": 70, "gpt-4o-mini": 30},
        "tool_p": 0.05,
        "image_p": 0.0,
        "topics": """leave, parental-leave, remote-work, expenses, benefits, payroll,
            performance-review, contracts, termination, gdpr, code-of-conduct, relocation,
            visa, training, overtime, holidays""",
        "system": [
            "You are the HR policy assistant. Answer from the employee handbook; this is "
            "general information, not legal advice. For individual cases, refer the employee "
            "to their HR business partner.",
        ],
        "user_open": [
            "How many",
            "Am I allowed to",
            "What is the policy on",
            "Can my manager",
            "Does the company pay for",
            "",
        ],
        "asst_open": [
            "According to the employee handbook,",
            "Good question.",
            "The policy states that",
            "In short:",
        ],
    },
    "travel-agent": {
        "weight": 10,
        "project": "growth",
        "models": {"gpt-4o-mini": 50, "llama-3.1-70b": 30, "qwen2.5-7b": 20},
        "tool_p": 0.33,
        "image_p": 0.06,
        "topics": """flights, hotels, trains, visa, cancellation, rebooking, baggage, insurance,
            car-rental, itinerary, offsite, conference, loyalty, refunds""",
        "system": [
            "You are a corporate travel agent. Follow the travel policy: economy for flights "
            "under 6 hours, hotels under 180 EUR per night. Use the tools to search and book; "
            "always confirm before booking.",
        ],
        "user_open": [
            "I need a flight to",
            "Can you find a hotel in",
            "My flight was cancelled,",
            "Plan a two-day trip to",
            "What's the baggage allowance for",
            "",
        ],
        "asst_open": [
            "Here are some options:",
            "Sure!",
            "I found the following:",
            "Before I book, please confirm:",
        ],
    },
    "summarizer": {
        "weight": 10,
        "project": "knowledge",
        "models": {"llama-3.1-8b": 50, "mistral-small": 30, "qwen2.5-7b": 20},
        "tool_p": 0.0,
        "image_p": 0.0,
        "topics": """meeting-notes, incident, earnings, research, email-thread, support-ticket,
            contract, news, product-review, interview""",
        "system": [
            "Summarize the user's text in at most 5 bullet points. Keep names, numbers and "
            "dates exact. Do not add information.",
            "You produce executive summaries: one sentence of context, then key points and "
            "action items with owners.",
        ],
        "user_open": [
            "Summarize this:",
            "TL;DR please:",
            "Give me the key points and action items:",
            "Summarize in 3 bullets:",
        ],
        "asst_open": ["Summary:", "Key points:", "TL;DR:"],
    },
}

TOPIC_MODIFIERS = _words("eu, us, b2b, mobile, urgent, vip, apac, legacy, v2, escalated, bulk")

# OpenAI tool definitions per use case: name -> (description, {param: (type, description)})
TOOL_SPECS: dict[str, dict[str, tuple[str, dict[str, tuple[str, str]]]]] = {
    "support": {
        "lookup_order": ("Look up an order by its number.", {"order_id": ("string", "Order no.")}),
        "check_warranty": (
            "Check the warranty status of a tool.",
            {"serial_number": ("string", "Serial number on the rating plate")},
        ),
        "create_ticket": (
            "Open a support ticket for a human agent.",
            {"subject": ("string", "Short summary"), "priority": ("string", "low|normal|high")},
        ),
    },
    "rag-bot": {
        "search_docs": (
            "Search the maintenance knowledge base.",
            {"query": ("string", "Search query"), "top_k": ("integer", "Number of results")},
        ),
    },
    "code-assist": {
        "read_file": ("Read a file from the repository.", {"path": ("string", "Relative path")}),
        "run_tests": ("Run pytest on a path.", {"path": ("string", "Test file or directory")}),
    },
    "hr-policy": {
        "get_leave_balance": (
            "Get an employee's remaining leave days.",
            {"employee_id": ("string", "Employee id")},
        ),
    },
    "travel-agent": {
        "search_flights": (
            "Search flights.",
            {
                "origin": ("string", "IATA code"),
                "destination": ("string", "IATA code"),
                "date": ("string", "YYYY-MM-DD"),
            },
        ),
        "search_hotels": (
            "Search hotels in a city.",
            {
                "city": ("string", "City"),
                "check_in": ("string", "YYYY-MM-DD"),
                "nights": ("integer", ""),
            },
        ),
        "book": ("Book a flight or hotel offer.", {"offer_id": ("string", "Offer id")}),
    },
}


def _tool_defs(uc: str) -> list[dict[str, Any]]:
    out = []
    for name, (desc, params) in TOOL_SPECS.get(uc, {}).items():
        props = {
            p: ({"type": t, "description": d} if d else {"type": t}) for p, (t, d) in params.items()
        }
        out.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": desc,
                    "parameters": {"type": "object", "properties": props, "required": list(props)},
                },
            }
        )
    return out


TOOL_DEFS = {uc: _tool_defs(uc) for uc in USE_CASES}
TOOL_DEFS_JSON = {uc: json.dumps(d) for uc, d in TOOL_DEFS.items()}

CODE_SNIPPETS = [
    (
        "python",
        "def $F($A, $B=None):\n    result = []\n    for item in $A:\n"
        "        if item.$C is not None:\n            result.append(item.$C)\n    return result",
    ),
    (
        "python",
        'import pandas as pd\n\ndf = pd.read_csv("$T.csv")\ndf["$C"] = df["$C"].fillna(0)\n'
        'print(df.groupby("$B")["$C"].sum())',
    ),
    (
        "text",
        'Traceback (most recent call last):\n  File "$T.py", line $N, in <module>\n'
        "    $F($A)\n  File \"$T.py\", line $M, in $F\n    return $A['$C']\nKeyError: '$C'",
    ),
    (
        "sql",
        "SELECT $C, COUNT(*) AS n\nFROM $T\nWHERE created_at >= now() - INTERVAL '7 days'\n"
        "GROUP BY $C\nORDER BY n DESC\nLIMIT $N;",
    ),
    (
        "typescript",
        "async function $F($A: string): Promise<$Y> {\n"
        "  const res = await fetch(`/api/$T/${$A}`);\n"
        "  if (!res.ok) throw new Error(res.statusText);\n  return (await res.json()) as $Y;\n}",
    ),
    (
        "rust",
        "fn $F($A: &str) -> Result<usize, ParseIntError> {\n"
        "    let n = $A.trim().parse::<usize>()?;\n"
        "    Ok(n * $N)\n}",
    ),
    (
        "python",
        '@pytest.fixture\ndef $A(tmp_path):\n    path = tmp_path / "$T.json"\n'
        "    path.write_text('{\"$C\": $N}')\n    return path\n\n\ndef test_$F($A):\n"
        '    assert $F($A)["$C"] == $N',
    ),
    (
        "bash",
        "docker build -t $T:latest .\ndocker run --rm -e $Y=1 -p 8080:8080 $T:latest\n"
        "kubectl logs deploy/$T --tail=$N",
    ),
]
IDENTS = _words(
    """parse_rows, load_config, fetch_user, merge_orders, normalize, retry, compute_total,
    validate, to_dict, handler, get_items, chunked, flatten, dedupe, build_index"""
)
VARS = _words("rows, items, cfg, user_id, payload, records, df, path, key, batch, ctx, resp")
COLS = _words("amount, status, customer_id, created_at, email, region, sku, price, qty, score")
TABLES = _words("orders, users, events, invoices, tickets, sessions, payments, inventory")
TYPES = _words("User, Order, Invoice, Ticket, Session, Payload, APP_DEBUG, LOG_LEVEL")

ERRORS = [
    ("upstream timeout after 30000 ms", 30),
    ("context length exceeded: {prompt} prompt tokens + {max} max_tokens > {limit}", 15),
    ("rate limit exceeded (429): retry after 2 s", 20),
    ("model overloaded (503 Service Unavailable)", 15),
    ("connection reset by peer while streaming the response", 8),
    ("invalid tool call arguments: Expecting ',' delimiter: line 1 column 42 (char 41)", 5),
    ("the response was blocked by the content filter", 4),
    ("internal server error (500) from inference backend", 3),
]

FEEDBACK_REASONS = {
    True: [
        "Exactly what I needed",
        "Clear and quick",
        "Solved my problem, thanks",
        "Good tone",
        "Correct citation",
        "Saved me a lot of time 🙏",
    ],
    False: [
        "Wrong order number",
        "Hallucinated a policy that doesn't exist",
        "Too long",
        "Didn't answer the question",
        "Code doesn't compile",
        "Outdated information",
        "Tone too formal",
        "Ignored the context",
        "Réponse incorrecte",
    ],
}

AB_CAMPAIGNS = {
    "support": ["support-prompt-v3-vs-v4", "llama8b-vs-70b-support"],
    "rag-bot": ["rag-topk-5-vs-10", "rerank-on-off"],
    "code-assist": ["qwen-vs-gpt4omini-code"],
    "travel-agent": ["travel-tools-v2"],
    "summarizer": ["summary-bullets-vs-prose"],
}

TURN_WEIGHTS = [62, 17, 8, 4, 2.5, 1.6, 1.1, 0.8, 0.6, 0.45, 0.35, 0.27]
TURN_WEIGHTS += [0.21, 0.17, 0.13, 0.1, 0.08, 0.06, 0.05, 0.04]  # up to 20 turns
SESSION_SIZE_WEIGHTS = [0, 60, 18, 10, 7, 5]  # index = number of interactions in the session

# -- helpers -------------------------------------------------------------------------------


def _cum(weights: Sequence[float]) -> list[float]:
    out, s = [], 0.0
    for w in weights:
        s += w
        out.append(s)
    return out


def _zipf(n: int, s: float) -> list[float]:
    return [1.0 / (r + 1) ** s for r in range(n)]


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond // 1000:03d}Z"


class _Gen:
    def __init__(self, n: int, seed: int, start: datetime, days: int) -> None:
        self.n = n
        self.seed = seed
        rng = self.rng = random.Random(seed)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.t0 = start.astimezone(UTC) - timedelta(days=days)

        # Hourly activity: a daily peak around 14:00 UTC, quieter weekends.
        weights = []
        for h in range(days * 24):
            t = self.t0 + timedelta(hours=h)
            w = 0.2 + math.exp(-(((t.hour - 14) / 4.5) ** 2))
            weights.append(w * (0.55 if t.weekday() >= 5 else 1.0))
        self.hour_w = weights
        self.hour_cum = _cum(weights)

        self.users = [self._uuid() for _ in range(400)]
        self.user_cum = _cum(_zipf(len(self.users), 0.9))
        self.uc_names = list(USE_CASES)
        self.uc_cum = _cum([USE_CASES[u]["weight"] for u in self.uc_names])
        self.models = {
            uc: (list(c["models"]), _cum(list(c["models"].values()))) for uc, c in USE_CASES.items()
        }
        self.topics: dict[str, tuple[list[str], list[float]]] = {}
        for uc, c in USE_CASES.items():
            base = _words(c["topics"])
            tail = [f"{b}-{m}" for m in TOPIC_MODIFIERS for b in base]
            rng.shuffle(tail)
            topics = base + tail[: 40 + len(base)]
            self.topics[uc] = (topics, _cum(_zipf(len(topics), 1.1)))

        # Word pools: each domain mixes function words, general words and its own terms.
        self.pools: dict[str, tuple[list[str], list[float]]] = {}
        for uc in USE_CASES:
            words = FUNCTION_WORDS + GENERAL_WORDS + DOMAINS[uc]
            pool_w = [6.0] * len(FUNCTION_WORDS) + [1.0] * len(GENERAL_WORDS)
            pool_w += [2.2] * len(DOMAINS[uc])
            self.pools[uc] = (words, _cum(pool_w))
        self.lang_cum = _cum(LANG_WEIGHTS)
        self.err_cum = _cum([w for _, w in ERRORS])
        self.turn_cum = _cum(TURN_WEIGHTS)
        self.sess_cum = _cum(SESSION_SIZE_WEIGHTS)
        self.open_sessions: list[dict[str, Any]] = []
        self.n_sessions = 0

    # -- primitives ------------------------------------------------------------------------
    def _uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"

    def _pick(self, items: list[Any], cum: list[float]) -> Any:
        return self.rng.choices(items, cum_weights=cum)[0]

    def _nwords(self, median: float, sigma: float, lo: int = 1, hi: int = 900) -> int:
        return max(lo, min(hi, int(self.rng.lognormvariate(math.log(median), sigma))))

    def _time(self, i: int) -> datetime:
        u = (i + self.rng.random()) / self.n * self.hour_cum[-1]
        b = bisect.bisect_left(self.hour_cum, u)
        b = min(b, len(self.hour_cum) - 1)
        prev = self.hour_cum[b - 1] if b else 0.0
        frac = min(max((u - prev) / self.hour_w[b], 0.0), 0.999999)
        return self.t0 + timedelta(hours=b + frac)

    def text(self, uc: str, nwords: int, lang: str = "en") -> str:
        """``nwords`` words of domain-flavoured prose in sentences of 4-20 words."""
        rng = self.rng
        words, cum = self.pools[uc]
        terms = DOMAINS[uc]
        drawn = rng.choices(words, cum_weights=cum, k=nwords)
        if lang != "en":
            foreign = LANG_WORDS[lang]
            for j in range(0, nwords, 3):
                drawn[j] = foreign[int(rng.random() * len(foreign))]
        out: list[str] = []
        j = 0
        while j < nwords:
            k = min(nwords - j, 4 + int(rng.random() * 17))
            sent = drawn[j : j + k]
            starter = STARTERS[int(rng.random() * len(STARTERS))]
            skip = starter.count(" ") + 1
            if k >= skip + 3 and rng.random() < 0.55:  # anchor on a starter and a term
                sent = [starter, terms[int(rng.random() * len(terms))]] + sent[skip + 1 :]
            else:
                sent[0] = sent[0][:1].upper() + sent[0][1:]
            r = rng.random()
            end = "?" if r < 0.15 else ("!" if r < 0.18 else ".")
            if len(sent) > 8 and rng.random() < 0.3:
                sent[len(sent) // 2] += ","
            out.append(" ".join(sent) + end)
            j += k
        if nwords > 120:  # paragraphs
            paras, cur = [], []
            for s in out:
                cur.append(s)
                if len(cur) >= 4 and rng.random() < 0.35:
                    paras.append(" ".join(cur))
                    cur = []
            if cur:
                paras.append(" ".join(cur))
            return "\n\n".join(paras)
        return " ".join(out)

    def _code(self) -> str:
        rng = self.rng
        lang, tpl = CODE_SNIPPETS[int(rng.random() * len(CODE_SNIPPETS))]
        subs = {
            "$F": rng.choice(IDENTS),
            "$A": rng.choice(VARS),
            "$B": rng.choice(VARS),
            "$C": rng.choice(COLS),
            "$T": rng.choice(TABLES),
            "$Y": rng.choice(TYPES),
            "$N": str(rng.randint(2, 400)),
            "$M": str(rng.randint(2, 400)),
        }
        for k, v in subs.items():
            tpl = tpl.replace(k, v)
        return f"```{lang}\n{tpl}\n```"

    def _name(self) -> str:
        return f"{self.rng.choice(FIRST_NAMES)} {self.rng.choice(LAST_NAMES)}"

    # -- messages --------------------------------------------------------------------------
    def user_text(self, uc: str, lang: str, first: bool) -> str:
        rng = self.rng
        cfg = USE_CASES[uc]
        opener = rng.choice(cfg["user_open"]) if first or rng.random() < 0.3 else ""
        if uc == "summarizer" and first:
            body = self.text(uc, self._nwords(85, 0.8, 20, 1200), lang)
            return f"{opener}\n\n{body}"
        if uc == "sales-email" and first:
            detail = self.text(uc, self._nwords(20, 0.6, 4, 120), lang)
            return f"{opener} {self._name()} at {rng.choice(COMPANIES)}. {detail}"
        body = self.text(uc, self._nwords(6, 0.9, 1, 500), lang)
        if uc == "rag-bot" and first:
            ctx = []
            for _ in range(1 + int(rng.random() * 3)):
                doc = f"doc-{rng.randint(100, 9999)}"
                ctx.append(f"[{doc}] " + self.text(uc, self._nwords(20, 0.5, 8, 200)))
            body = "Context:\n" + "\n\n".join(ctx) + f"\n\nQuestion: {opener} {body}"
            opener = ""
        elif uc == "code-assist" and rng.random() < 0.45:
            body = f"{body}\n\n{self._code()}"
        elif uc == "travel-agent" and rng.random() < 0.5:
            month = rng.choice(["Nov", "Dec", "Jan"])
            body = f"{body} {rng.choice(CITIES)}, {rng.randint(1, 28)} {month}."
        if opener and opener[-1] not in ".:?!" and not body.startswith("I "):
            body = body[:1].lower() + body[1:]
        text = f"{opener} {body}" if opener else body
        if rng.random() < 0.03:
            text += " " + rng.choice(EMOJI)
        return text

    def assistant_text(self, uc: str, lang: str) -> str:
        rng = self.rng
        cfg = USE_CASES[uc]
        opener = rng.choice(cfg["asst_open"])
        if uc == "sales-email":
            subj = self.text(uc, self._nwords(6, 0.3, 3, 12)).rstrip(".?!")
            body = self.text(uc, self._nwords(55, 0.4, 15, 250), lang)
            return (
                f"Subject: {subj}\n\nHi {rng.choice(FIRST_NAMES)},\n\n{body}\n\n"
                f"Best regards,\n{self._name()}\nAcme Tools"
            )
        if uc == "summarizer":
            bullets = [
                "- " + self.text(uc, self._nwords(10, 0.5, 3, 50), lang)
                for _ in range(2 + int(rng.random() * 4))
            ]
            return f"{opener}\n" + "\n".join(bullets)
        body = self.text(uc, self._nwords(13, 0.9, 2, 700), lang)
        if uc == "rag-bot":
            body += f" [doc-{rng.randint(100, 9999)}]"
        elif uc == "code-assist" and rng.random() < 0.6:
            body = f"{body}\n\n{self._code()}\n\n" + self.text(uc, self._nwords(15, 0.6))
        elif rng.random() < 0.15:
            items = [
                self.text(uc, self._nwords(9, 0.4, 2, 30)) for _ in range(2 + int(rng.random() * 4))
            ]
            body += "\n\n" + "\n".join(f"{k + 1}. {s}" for k, s in enumerate(items))
        if rng.random() < 0.01:
            body += " " + rng.choice(EMOJI)
        return f"{opener} {body}"

    def user_message(self, uc: str, lang: str, first: bool) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.004:
            return {"role": "user", "content": ""}
        text = self.user_text(uc, lang, first)
        if rng.random() < USE_CASES[uc]["image_p"]:
            url = f"https://images.example.com/u/{rng.getrandbits(64):016x}.jpg"
            image: dict[str, Any] = {"url": url}
            if rng.random() < 0.4:
                image["detail"] = rng.choice(["low", "high", "auto"])
            parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
            parts.append({"type": "image_url", "image_url": image})
            if rng.random() < 0.2:
                parts.reverse()
            return {"role": "user", "content": parts}
        return {"role": "user", "content": text}

    # -- tools -----------------------------------------------------------------------------
    def _call_id(self) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return "call_" + "".join(self.rng.choices(alphabet, k=24))

    def _tool_args(self, uc: str, name: str) -> dict[str, Any]:
        rng = self.rng
        if name == "lookup_order":
            return {"order_id": f"AT-{rng.randint(100000, 999999)}"}
        if name == "check_warranty":
            return {"serial_number": f"SN{rng.randint(10**7, 10**8 - 1)}"}
        if name == "create_ticket":
            subj = self.text(uc, self._nwords(6, 0.3, 3, 12)).rstrip(".?!")
            return {"subject": subj, "priority": rng.choice(["low", "normal", "normal", "high"])}
        if name == "search_docs":
            return {"query": self.text(uc, self._nwords(5, 0.4, 2, 12)).rstrip(".?!"), "top_k": 5}
        if name in ("read_file", "run_tests"):
            d = "tests" if name == "run_tests" else rng.choice(["src/app", "src/lib", "api"])
            prefix = "test_" if name == "run_tests" else ""
            return {"path": f"{d}/{prefix}{rng.choice(TABLES)}.py"}
        if name == "get_leave_balance":
            return {"employee_id": f"E{rng.randint(1000, 9999)}"}
        if name == "search_flights":
            o, d = rng.sample(AIRPORTS, 2)
            return {
                "origin": o,
                "destination": d,
                "date": f"2026-{rng.randint(11, 12)}-{rng.randint(10, 28)}",
            }
        if name == "search_hotels":
            return {
                "city": rng.choice(CITIES),
                "check_in": f"2026-12-{rng.randint(10, 28)}",
                "nights": rng.randint(1, 5),
            }
        return {"offer_id": f"OF-{rng.getrandbits(32):08x}"}

    def _tool_result(self, uc: str, name: str, args: dict[str, Any]) -> str:
        rng = self.rng
        if rng.random() < 0.04:
            return json.dumps({"error": "not found"})
        if name == "lookup_order":
            res: Any = {
                "order_id": args["order_id"],
                "status": rng.choice(["processing", "shipped", "delivered", "returned"]),
                "carrier": rng.choice(["DHL", "UPS", "DPD", "PostNL"]),
                "items": [
                    {"sku": f"AT-{rng.randint(1000, 9999)}", "qty": rng.randint(1, 3)}
                    for _ in range(1 + int(rng.random() * 3))
                ],
            }
        elif name == "check_warranty":
            res = {"valid": rng.random() < 0.7, "expires": f"2027-0{rng.randint(1, 9)}-15"}
        elif name == "create_ticket":
            res = {"ticket_id": f"T-{rng.randint(10000, 99999)}", "queue": "tier-2"}
        elif name == "search_docs":
            res = [
                {
                    "doc_id": f"doc-{rng.randint(100, 9999)}",
                    "score": round(rng.uniform(0.4, 0.95), 3),
                    "snippet": self.text(uc, self._nwords(25, 0.4, 5, 80)),
                }
                for _ in range(min(args.get("top_k", 3), 3))
            ]
        elif name == "read_file":
            res = {
                "path": args["path"],
                "content": self._code().split("\n", 1)[1].rsplit("```", 1)[0],
            }
        elif name == "run_tests":
            failed = rng.randint(0, 3)
            res = {"passed": rng.randint(5, 120), "failed": failed, "exit_code": 1 if failed else 0}
        elif name == "get_leave_balance":
            res = {"vacation_days": rng.randint(0, 30), "sick_days_used": rng.randint(0, 10)}
        elif name == "search_flights":
            res = [
                {
                    "offer_id": f"OF-{rng.getrandbits(32):08x}",
                    "flight": rng.choice(["LH", "TP", "KL", "SK", "BA", "AF"])
                    + str(rng.randint(100, 9999)),
                    "depart": f"{rng.randint(6, 21):02d}:{rng.choice(['05', '20', '35', '50'])}",
                    "price_eur": rng.randint(89, 1400),
                    "stops": rng.choice([0, 0, 1, 1, 2]),
                }
                for _ in range(1 + int(rng.random() * 3))
            ]
        elif name == "search_hotels":
            res = [
                {
                    "offer_id": f"OF-{rng.getrandbits(32):08x}",
                    "hotel": f"Hotel {rng.choice(LAST_NAMES)} {args['city']}",
                    "price_per_night_eur": rng.randint(70, 260),
                    "rating": round(rng.uniform(3.2, 4.9), 1),
                }
                for _ in range(1 + int(rng.random() * 3))
            ]
        else:
            res = {"confirmation": f"BK{rng.randint(100000, 999999)}", "status": "confirmed"}
        return json.dumps(res, ensure_ascii=False)

    def tool_round(self, uc: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """An assistant message with 1-2 tool calls and the matching tool results."""
        rng = self.rng
        names = list(TOOL_SPECS[uc])
        calls, results = [], []
        for _ in range(2 if rng.random() < 0.2 else 1):
            name = rng.choice(names)
            args = self._tool_args(uc, name)
            cid = self._call_id()
            calls.append(
                {
                    "id": cid,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
                }
            )
            results.append(
                {"role": "tool", "tool_call_id": cid, "content": self._tool_result(uc, name, args)}
            )
        content = self.text(uc, self._nwords(8, 0.4, 3, 20)) if rng.random() < 0.25 else None
        return {"role": "assistant", "content": content, "tool_calls": calls}, results

    # -- sessions and interactions ---------------------------------------------------------
    def _new_session(self, t: datetime) -> dict[str, Any]:
        rng = self.rng
        uc = self._pick(self.uc_names, self.uc_cum)
        models, mcum = self.models[uc]
        topics, tcum = self.topics[uc]
        lang = self._pick(LANGS, self.lang_cum)
        labels: dict[str, str] = {}
        if rng.random() < 0.95:
            labels["project"] = USE_CASES[uc]["project"]
        if rng.random() < 0.85:
            labels["topic"] = self._pick(topics, tcum)
        if uc in ("support", "sales-email", "travel-agent") or rng.random() < 0.4:
            if rng.random() < 0.3:
                cust = 1 + int(rng.random() ** 1.5 * 200)  # a few big accounts
            else:
                cust = 1 + int(rng.random() * 20000)
            labels["customer_id"] = f"cust-{cust:05d}"
        if rng.random() < 0.9:
            labels["env"] = "prod" if rng.random() < 0.85 else "staging"
        if lang != "en" or rng.random() < 0.3:
            labels["language"] = lang
        if rng.random() < 0.2:
            labels["channel"] = rng.choice(["web", "web", "slack", "email", "api", "mobile"])
        if rng.random() < 0.1:
            labels["app_version"] = f"2.{rng.randint(3, 9)}.{rng.randint(0, 12)}"
        self.n_sessions += 1
        size = self._pick(list(range(len(SESSION_SIZE_WEIGHTS))), self.sess_cum)
        campaigns = AB_CAMPAIGNS.get(uc)
        sess = {
            "uc": uc,
            "lang": lang,
            "model": self._pick(models, mcum),
            "user": self.users[self._pick(list(range(len(self.users))), self.user_cum)]
            if rng.random() < 0.92
            else None,
            "session_id": f"sess-{rng.getrandbits(64):016x}" if rng.random() < 0.85 else None,
            "ab_campaign": rng.choice(campaigns) if campaigns and rng.random() < 0.3 else None,
            "labels": labels,
            "size": size,
            "count": 0,
            "last_t": t,
            "messages": None,  # the conversation so far, for the next interaction
            "pending": None,  # tool calls awaiting results
            "system_p": 0.9 if uc != "summarizer" else 0.75,
        }
        return sess

    def _session(self, t: datetime) -> dict[str, Any]:
        rng = self.rng
        pool = self.open_sessions
        pool[:] = [s for s in pool if (t - s["last_t"]).total_seconds() < 3 * 3600][-32:]
        for s in pool:  # an agent loop continues right away
            if s["pending"] is not None:
                pool.remove(s)
                return s
        if pool and rng.random() < 0.35:
            s = pool.pop(int(rng.random() * len(pool)))
            return s
        return self._new_session(t)

    def interaction(self, i: int) -> dict[str, Any]:
        rng = self.rng
        t = self._time(i)
        sess = self._session(t)
        uc, lang = sess["uc"], sess["lang"]
        cfg = USE_CASES[uc]
        tools_offered = bool(TOOL_SPECS.get(uc)) and (
            sess["pending"] is not None or rng.random() < cfg["tool_p"] * 1.3
        )
        use_tool = False
        tool_completion = False

        prev = sess["messages"]
        if sess["pending"] is not None:
            # Agent loop: the previous completion called tools; this one gets the results.
            call_msg, results = sess["pending"]
            messages = prev + [call_msg] + results
            sess["pending"] = None
        elif prev is not None and sess.get("errored") and rng.random() < 0.7:
            messages = list(prev)  # a retry of the failed request
        elif prev is not None and len(prev) < 30 and rng.random() < 0.4:
            messages = prev + [self.user_message(uc, lang, first=False)]
            tool_completion = tools_offered and rng.random() < 0.25
        else:
            messages = []
            if rng.random() < sess["system_p"]:
                role = "developer" if rng.random() < 0.05 else "system"
                messages.append({"role": role, "content": rng.choice(cfg["system"])})
            turns = self._pick(list(range(1, len(TURN_WEIGHTS) + 1)), self.turn_cum)
            if uc == "summarizer":
                turns = 1 if rng.random() < 0.9 else 2
            use_tool = tools_offered and rng.random() < 0.4
            for k in range(turns):
                messages.append(self.user_message(uc, lang, first=(k == 0)))
                if k < turns - 1:
                    if TOOL_SPECS.get(uc) and tools_offered and rng.random() < 0.3:
                        call_msg, results = self.tool_round(uc)
                        messages.append(call_msg)
                        messages.extend(results)
                        use_tool = True
                    messages.append({"role": "assistant", "content": self.assistant_text(uc, lang)})
            if use_tool and rng.random() < 0.5:
                call_msg, results = self.tool_round(uc)
                messages.append(call_msg)
                messages.extend(results)
            elif use_tool:
                tool_completion = True

        # Copy the per-message dicts so callers may mutate what they get.
        messages = [dict(m) for m in messages]
        status = "error" if rng.random() < 0.02 else "ok"
        completion: Any
        error = ""
        if status == "error":
            error = ERRORS[bisect.bisect_left(self.err_cum, rng.random() * self.err_cum[-1])][0]
            completion = None
            completion_text = ""
        elif tool_completion:
            call_msg, results = self.tool_round(uc)
            completion = json.loads(json.dumps(call_msg))  # not shared with the session
            completion_text = call_msg["content"] or ""
            sess["pending"] = (call_msg, results)
            if sess["session_id"] is not None and sess["size"] <= sess["count"] + 1:
                sess["size"] = min(sess["count"] + 2, len(SESSION_SIZE_WEIGHTS) - 1)
        elif rng.random() < 0.003:
            completion = completion_text = ""
        else:
            completion = completion_text = self.assistant_text(uc, lang)

        model = sess["model"]
        if rng.random() < 0.03:  # occasional fallback model
            model = rng.choice(MODELS)

        item: dict[str, Any] = {
            "id": f"smp-{self.seed}-{i:07d}",
            "use_case": uc,
            "model": model,
            "messages": messages,
            "completion": completion,
        }
        if sess["labels"]:
            labels = dict(sess["labels"])
            if "topic" in labels and rng.random() < 0.1:
                topics, tcum = self.topics[uc]
                labels["topic"] = self._pick(topics, tcum)
            item["labels"] = labels
        for key in ("user", "session_id", "ab_campaign"):
            if sess[key] is not None:
                item[key] = sess[key]
        item["created_at"] = _iso(t)

        # usage: ~1.3 tokens per word, plus per-message overhead, tools and images
        prompt_words = 0
        images = 0
        for m in messages:
            c = m.get("content")
            if isinstance(c, str):
                prompt_words += c.count(" ") + c.count("\n") + 1
            elif isinstance(c, list):
                for p in c:
                    if p.get("type") == "text":
                        prompt_words += p["text"].count(" ") + 1
                    else:
                        images += 1
            for tc in m.get("tool_calls") or ():
                prompt_words += 6 + len(tc["function"]["arguments"]) // 5
        params: dict[str, Any] = {
            "temperature": rng.choice([0.0, 0.2, 0.3, 0.7, 0.7, 1.0]),
            "max_tokens": rng.choice([256, 512, 1024, 1024, 2048, 4096]),
        }
        if rng.random() < 0.2:
            params["top_p"] = rng.choice([0.9, 0.95, 1.0])
        stream = rng.random() < 0.7
        if stream:
            params["stream"] = True
        tool_tokens = 0
        if tools_offered or use_tool or tool_completion:
            params["tools"] = json.loads(TOOL_DEFS_JSON[uc])  # a fresh copy
            if rng.random() < 0.3:
                params["tool_choice"] = "auto"
            tool_tokens = 60 * len(TOOL_DEFS[uc])
        prompt_tokens = int(
            (prompt_words * 1.3 + 4 * len(messages)) * rng.uniform(0.92, 1.08)
            + tool_tokens
            + images * rng.choice([85, 765, 1105])
        )
        if status == "error":
            completion_tokens = 0
        elif tool_completion:
            completion_tokens = 12 + sum(
                len(tc["function"]["arguments"]) // 3 for tc in completion["tool_calls"]
            )
        else:
            n = (
                completion_text.count(" ")
                + completion_text.count("\n")
                + (1 if completion_text else 0)
            )
            completion_tokens = int(n * 1.3 * rng.uniform(0.9, 1.1))
        item["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

        per_tok, ttft_median = MODEL_SPEED.get(model, (10.0, 300.0))
        ttft = rng.lognormvariate(math.log(ttft_median + prompt_tokens * 0.05), 0.55)
        gen = completion_tokens * per_tok * rng.lognormvariate(0.0, 0.35)
        latency = ttft + gen
        if status == "error":
            latency = (
                30000.0 if error.startswith("upstream timeout") else ttft * rng.uniform(0.2, 1)
            )
        item["latency_ms"] = round(latency, 1)
        if stream and status == "ok":
            item["ttft_ms"] = round(min(ttft, latency), 1)
        item["params"] = params
        item["status"] = status
        if status == "error":
            if "{limit}" in error:  # max_tokens set too high for the model's window
                limit = rng.choice([4096, 8192, 8192, 32768])
                if prompt_tokens + params["max_tokens"] <= limit:
                    params["max_tokens"] = -(-(limit - prompt_tokens + 1) // 1024) * 1024
                error = error.format(prompt=prompt_tokens, max=params["max_tokens"], limit=limit)
            item["error"] = error

        if status == "ok" and rng.random() < 0.1:
            fbs = []
            good = rng.random() < 0.72
            metrics = ["thumbs_up", "rating", "accuracy"]
            for metric in rng.sample(metrics, 2 if rng.random() < 0.3 else 1):
                fb: dict[str, Any] = {"metric": metric}
                if metric == "thumbs_up":
                    fb["value"] = good
                elif metric == "rating":
                    fb["value"] = rng.choice([4, 5, 5] if good else [1, 2, 3])
                else:
                    lo, hi = (0.6, 1.0) if good else (0.0, 0.6)
                    fb["value"] = round(rng.uniform(lo, hi), 2)
                if rng.random() < 0.3:
                    fb["reason"] = rng.choice(FEEDBACK_REASONS[good])
                fbs.append(fb)
            item["feedbacks"] = fbs

        # Bookkeeping for the next interaction of the session.
        sess["count"] += 1
        sess["last_t"] = t
        sess["errored"] = status == "error"
        if status == "ok":
            if tool_completion:
                sess["messages"] = messages
            else:
                sess["messages"] = messages + [{"role": "assistant", "content": completion_text}]
        else:
            sess["messages"] = messages
            sess["pending"] = None
        if sess["session_id"] is not None and sess["count"] < sess["size"]:
            self.open_sessions.append(sess)
        return item


def generate(
    n: int, seed: int = 7, start: datetime | None = None, days: int = 14
) -> Iterator[dict[str, Any]]:
    """``n`` interactions spread over the ``days`` days before ``start``, in time order.

    ``start`` defaults to 2026-11-01T00:00:00Z so the output depends only on the arguments.
    Items are fresh dicts, but interactions of one session may share nested message parts
    (content-part lists, tool calls): deep-copy before mutating those in place.
    """
    if n <= 0:
        return
    gen = _Gen(n, seed, start or DEFAULT_START, days)
    for i in range(n):
        yield gen.interaction(i)


def dumps(item: dict[str, Any]) -> str:
    """One NDJSON line (without the newline): compact, UTF-8, key order as generated."""
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="number of interactions (default 3000)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    ap.add_argument("--days", type=int, default=14, help="days of history (default 14)")
    ap.add_argument(
        "--start",
        default=None,
        help="end of the time window, ISO-8601 (default 2026-11-01T00:00:00Z)",
    )
    ap.add_argument("-o", "--output", default="-", help="output file, or - for stdout")
    args = ap.parse_args(argv)
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00")) if args.start else None

    t = time.perf_counter()
    if args.output == "-":
        out = sys.stdout.buffer
        close = False
    else:
        out = open(args.output, "wb")  # noqa: SIM115
        close = True
    try:
        buf: list[str] = []
        for item in generate(args.n, args.seed, start, args.days):
            buf.append(dumps(item))
            if len(buf) >= 1000:
                out.write(("\n".join(buf) + "\n").encode("utf-8"))
                buf.clear()
        if buf:
            out.write(("\n".join(buf) + "\n").encode("utf-8"))
        out.flush()
    finally:
        if close:
            out.close()
    if args.output != "-":
        print(
            f"wrote {args.n} interactions to {args.output} in {time.perf_counter() - t:.1f}s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
