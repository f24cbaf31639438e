"""Topic ``tpi-safety`` (rules S1-S7): contraindications and risks at order time."""

from __future__ import annotations

from cards.card import Finding, Indicator, Sources, Suggestion, TopicAdvice, join_evidence
from cards.facts import ConditionFact, Facts, MedicationFact, lower_first
from cards.reading import format_number, sentence
from cards.regions import any_match
from cards.terminology import CLASS_AGENT

ASPIRIN = "aspirin"


def safety_advice(facts: Facts) -> TopicAdvice:
    advice = TopicAdvice("tpi-safety")
    infection = active_infection(facts)
    advice.add(infection)
    advice.add(anesthetic_allergy(facts))
    advice.add(anticoagulation(facts))
    advice.add(bleeding_disorder(facts))
    diabetes = steroid_with_uncontrolled_diabetes(facts)
    pregnancy = steroid_in_pregnancy(facts)
    advice.add(diabetes)
    advice.add(pregnancy)
    advice.add(site_over_lung(facts))
    if infection is not None and infection.indicator is Indicator.CRITICAL:
        withdraw = withdraw_tpi_order(facts)
        if withdraw is not None:
            advice.suggestions.append(withdraw)
    allergy_drafts = anesthetic_drafts_to_remove(facts)
    if allergy_drafts:
        advice.suggestions.append(remove_drafts(allergy_drafts, "the anesthetic order"))
    if diabetes or pregnancy:
        steroids = facts.draft_medications_in("corticosteroids")
        if steroids:
            advice.suggestions.append(remove_drafts(steroids, "the steroid order"))
    return advice


# --------------------------------------------------------------------------- S1


def active_infection(facts: Facts) -> Finding | None:
    """S1: a recent skin / soft-tissue or systemic infection.

    Critical (do not inject) when systemic, at the order's region, or where either region
    is unknown; a warning when it is elsewhere (a known, different region).
    """
    days = facts.policy.infection_recent_days
    systemic = facts.recent_conditions_in("systemic-infection", days)
    local = facts.recent_conditions_in("skin-soft-tissue-infection", days)
    if not systemic and not local:
        return None
    order_places = facts.order_places
    at_site: list[ConditionFact] = []
    elsewhere: list[tuple[ConditionFact, str]] = []
    for infection in local:
        places = facts.condition_places(infection)
        if places is None or order_places is None or any_match(places, order_places):
            at_site.append(infection)
        else:
            elsewhere.append((infection, ", ".join(str(p) for p in places)))
    links = (Sources.AFP_2023, Sources.AFP_2002)
    if systemic or at_site:
        lead = (systemic or at_site)[0]
        every = [c.evidence for c in systemic + at_site]
        why = (
            "Systemic infection: do not inject until it is treated."
            if systemic
            else "Do not inject through or near infected skin; treat the infection first "
            "and reorder afterwards."
        )
        if not systemic and (
            order_places is None or any(facts.condition_places(c) is None for c in at_site)
        ):
            why += " (Where the infection or the injection site is not recorded, it is treated as the same place.)"
        also = ""
        if elsewhere:
            also = (
                " Also elsewhere: "
                + "; ".join(f"{c.name} ({where})" for c, where in elsewhere)
                + "."
            )
        unplaced = not systemic and (
            order_places is None or all(facts.condition_places(c) is None for c in at_site)
        )
        return Finding(
            "S1",
            Indicator.CRITICAL,
            "Active infection",
            f"{sentence(lead.short_name)}: do not perform the trigger point injection"
            + (" (site not recorded)" if unplaced else ""),
            f"Recent and active: {join_evidence(every)}. {why}{also}",
            links,
        )
    _, where = elsewhere[0]
    listed = "; ".join(
        f"{c.name} ({w}, {c.evidence.day or 'date not recorded'})" for c, w in elsewhere
    )
    return Finding(
        "S1",
        Indicator.WARNING,
        "Infection elsewhere",
        f"Infection elsewhere ({where}): consider deferring an elective injection until it is "
        "treated",
        f"Recent and active: {listed}, away from the injection site. An elective injection can "
        "wait until the infection is treated.",
        links,
    )


def withdraw_tpi_order(facts: Facts) -> Suggestion | None:
    """Remove the draft TPI order(s), by reference."""
    references = [o.reference for o in facts.orders.tpi_orders if o.reference]
    if not references:
        return None
    label = "Remove the TPI order: do not inject while the infection is active"
    actions = tuple(
        {"type": "delete", "description": label, "resourceId": reference}
        for reference in references
    )
    return Suggestion(label, actions, recommended=True)


# --------------------------------------------------------------------------- S2


def anesthetic_allergy(facts: Facts) -> Finding | None:
    """S2: an allergy to an amide local anesthetic (or Z88.4): change the injectate."""
    allergies = facts.anesthetic_allergies
    if not allergies:
        return None
    severe = [a for a in allergies if a.severe]
    lead = (severe or allergies)[0]
    named = [a for a in allergies if not a.status_only]
    listed = "; ".join(
        f"{a.name}" + (f" ({a.reaction})" if a.reaction else "") + (" — severe" if a.severe else "")
        for a in allergies
    )
    if lead.status_only:
        summary = "Allergy to an anesthetic agent on record: check which agent before injecting"
        what = "The agent is not named: review the allergy before choosing the injectate."
    else:
        agent = lead.name
        summary = (
            f"Allergy to {agent}: inject saline or another agent, not {agent}"
            if lead.severe
            else f"Intolerance of {agent} on record: review before injecting it"
            if lead.intolerance
            else f"Low-risk allergy to {agent} on record: review before injecting it"
        )
        what = (
            "Avoid that agent: preservative-free saline or dry needling, or another agent "
            "after allergy review. No injectate has been shown better than another for "
            "trigger points."
        )
    if named and not lead.status_only and lead.agent == CLASS_AGENT:
        what += " The whole amide class is recorded: an ester agent only after allergy review."
    return Finding(
        "S2",
        Indicator.CRITICAL if severe else Indicator.WARNING,
        "Local anesthetic allergy",
        summary,
        f"Recorded: {listed}. {what}",
        (Sources.AFP_2023, Sources.SCOTT),
    )


def anesthetic_drafts_to_remove(facts: Facts) -> list[MedicationFact]:
    """Draft anesthetic orders for an agent the patient is allergic to (never the TPI)."""
    agents = {a.agent for a in facts.anesthetic_allergies if a.agent}
    if not agents:
        return []
    drafts = facts.draft_medications_in("local-anesthetics")
    return [d for d in drafts if CLASS_AGENT in agents or d.agent in agents]


def remove_drafts(drafts: list[MedicationFact], what: str) -> Suggestion:
    names = ", ".join(dict.fromkeys(d.agent for d in drafts))
    label = f"Remove {what} ({names})"
    actions = tuple(
        {
            "type": "delete",
            "description": f"Remove the draft order for {d.agent}",
            "resourceId": f"MedicationRequest/{d.request.id}",
        }
        for d in drafts
        if d.request.id
    )
    return Suggestion(label, actions, recommended=True)


# --------------------------------------------------------------------------- S3


def anticoagulation(facts: Facts) -> Finding | None:
    """S3: an anticoagulant or P2Y12 antiplatelet (or Z79.01). Info by default — a TPI is a
    low-risk procedure for bleeding (ASRA) — a warning with a reason for more care."""
    drugs = facts.medications_in("anticoagulants")
    long_term = facts.conditions_in("long-term-anticoagulant-use")
    if not drugs and not long_term:
        return None
    policy = facts.policy
    aspirin = facts.medications_in("aspirin")
    agents = list(dict.fromkeys([d.agent for d in drugs] + ([ASPIRIN] if aspirin else [])))
    # (what the summary says, what the detail says)
    reasons: list[tuple[str, str]] = []
    inr, platelets = facts.latest_inr, facts.latest_platelets
    if inr is not None and inr.value > policy.inr_threshold:
        reasons.append(
            (
                f"INR {inr.text}",
                f"INR {inr.text} on {inr.day.isoformat()} (over "
                f"{format_number(policy.inr_threshold)})",
            )
        )
    if platelets is not None and platelets.value < policy.platelet_threshold:
        reasons.append(
            (
                f"platelets {platelets.text}",
                f"platelets {platelets.text} on {platelets.day.isoformat()} "
                f"(under {format_number(policy.platelet_threshold)})",
            )
        )
    if len(agents) >= 2:
        reasons.append(
            (
                " and ".join(agents[:2]) if len(agents) == 2 else f"{len(agents)} antithrombotics",
                f"{len(agents)} antithrombotic agents at once ({', '.join(agents)})",
            )
        )
    organ = facts.conditions_in("severe-liver-kidney-disease")
    if organ:
        reasons.append((lower_first(organ[0].short_name), f"{organ[0].name} active"))
    deep = facts.order_site_roles("non-compressible")
    if deep:
        reasons.append(("a deep site", f"a site that cannot be compressed ({', '.join(deep)})"))
    shown = [d.text for d in drugs] + [a.text for a in aspirin]
    shown += [f"{c.name} (problem list)" for c in long_term]
    labs = [
        f"INR {inr.text} ({inr.day.isoformat()})"
        if inr
        else f"no INR in the last {policy.inr_window_days} days",
        f"platelets {platelets.text} ({platelets.day.isoformat()})"
        if platelets
        else f"no platelet count in the last {policy.platelet_window_days} days",
    ]
    lead = drugs[0].agent if drugs else "long-term anticoagulation"
    detail = f"Antithrombotics: {', '.join(dict.fromkeys(shown))}. {sentence('; '.join(labs))}."
    care = (
        "Weigh the risk, use firm pressure, avoid deep sites; holding the drug is the "
        "prescriber's call."
    )
    if reasons:
        return Finding(
            "S3",
            Indicator.WARNING,
            "Bleeding risk",
            f"{sentence(_with(lead, reasons[0][0]))}: higher bleeding risk for a trigger point "
            "injection",
            f"{detail} Higher risk: {'; '.join(r[1] for r in reasons)}. {care}",
            (Sources.ASRA, Sources.AFP_2023),
        )
    return Finding(
        "S3",
        Indicator.INFO,
        "Bleeding risk",
        f"On {lead}: low bleeding risk for a trigger point injection, use firm pressure",
        f"{detail} A TPI is a low-risk procedure for bleeding (ASRA). {care}",
        (Sources.ASRA, Sources.AFP_2023),
    )


def _with(lead: str, reason: str) -> str:
    """ "On apixaban with INR 3.4"; two agents read "On apixaban and clopidogrel"."""
    if reason.startswith(lead + " and "):
        return f"on {reason}"
    return f"on {lead} with {reason}"


# --------------------------------------------------------------------------- S4


def bleeding_disorder(facts: Facts) -> Finding | None:
    """S4: a bleeding disorder, a thrombocytopenia, or a low platelet count."""
    policy = facts.policy
    disorders = facts.conditions_in("bleeding-disorders")
    low_counts = facts.conditions_in("thrombocytopenia")
    platelets = facts.latest_platelets
    low = platelets is not None and platelets.value < policy.platelet_threshold
    if not disorders and not low_counts and not low:
        return None
    count = (
        f"latest platelet count {platelets.text} ({platelets.day.isoformat()})"
        if platelets
        else f"no platelet count in the last {policy.platelet_window_days} days"
    )
    diagnoses = [c.evidence for c in disorders + low_counts]
    recorded = f"Active: {join_evidence(diagnoses)}. " if diagnoses else ""
    if not disorders and low_counts and platelets is not None and not low:
        return Finding(
            "S4",
            Indicator.INFO,
            "Thrombocytopenia, count stable",
            f"{sentence(low_counts[0].short_name)} with a platelet count of {platelets.text}: "
            "use firm pressure",
            f"{recorded}{sentence(count)}, at or above "
            f"{format_number(policy.platelet_threshold)} x 10^9/L: no hematology input needed "
            "for a trigger point injection.",
            (Sources.ASRA, Sources.AFP_2023),
        )
    if disorders:
        summary = (
            f"{sentence(disorders[0].short_name)}: defer the injection pending hematology input"
        )
    elif low:
        summary = f"Platelet count {platelets.text}: defer the injection pending hematology input"
    else:
        summary = f"{sentence(low_counts[0].short_name)}, no recent platelet count: check one first"
    return Finding(
        "S4",
        Indicator.WARNING,
        "Bleeding disorder",
        summary,
        f"{recorded}{sentence(count)}. Defer the trigger point injection pending hematology "
        "input" + ("" if platelets else "; check a platelet count") + ".",
        (Sources.ASRA, Sources.AFP_2023),
    )


# --------------------------------------------------------------------------- S5, S6


def steroid_in_order(facts: Facts) -> list[str]:
    """Corticosteroids that are part of the order: draft orders, or named in the TPI order."""
    drafts = [d.agent for d in facts.draft_medications_in("corticosteroids")]
    return list(dict.fromkeys(drafts + facts.order_names("corticosteroids")))


def steroid_with_uncontrolled_diabetes(facts: Facts) -> Finding | None:
    """S5: a corticosteroid in the order and uncontrolled diabetes."""
    steroids = steroid_in_order(facts)
    if not steroids:
        return None
    shown = [str(c.evidence) for c in facts.conditions_in("uncontrolled-diabetes")]
    hba1c = facts.latest_hba1c
    threshold = facts.policy.hba1c_threshold
    high = hba1c if hba1c is not None and hba1c.value >= threshold else None
    if high is not None:
        shown.append(f"HbA1c {high.text} ({high.day.isoformat()})")
    if not shown:
        return None
    lead = f"HbA1c {high.text}" if high is not None else "Uncontrolled diabetes"
    return Finding(
        "S5",
        Indicator.WARNING,
        "Steroid with uncontrolled diabetes",
        f"{lead}: leave the steroid ({steroids[0]}) out of the injection",
        f"Steroid in this order: {', '.join(steroids)}. Diabetes not controlled: "
        f"{'; '.join(shown)} (HbA1c threshold {format_number(threshold)} % within "
        f"{facts.policy.hba1c_window_days} days). A corticosteroid raises blood glucose; local "
        "anesthetic alone works as well for trigger points.",
        (Sources.SCOTT, Sources.AFP_2023),
    )


def steroid_in_pregnancy(facts: Facts) -> Finding | None:
    """S6: a corticosteroid in the order and a current pregnancy."""
    steroids = steroid_in_order(facts)
    if not steroids or not facts.pregnancy:
        return None
    return Finding(
        "S6",
        Indicator.WARNING,
        "Steroid in pregnancy",
        f"Patient is pregnant: avoid the steroid ({steroids[0]}) and reconsider timing",
        f"Steroid in this order: {', '.join(steroids)}. Pregnancy: "
        f"{join_evidence(facts.pregnancy)}. Avoid the steroid (local anesthetic alone works as "
        "well) and reconsider the timing of the injection.",
        (Sources.SCOTT,),
    )


# --------------------------------------------------------------------------- S7


def site_over_lung(facts: Facts) -> Finding | None:
    """S7: a site over the lung: pneumothorax risk."""
    sites = facts.order_site_roles("over-lung")
    if not sites:
        return None
    return Finding(
        "S7",
        Indicator.INFO,
        "Site over the lung",
        f"Injection over the lung ({sites[0]}): superficial, tangential needle to avoid "
        "pneumothorax",
        f"Ordered site over the lung apex or thorax: {', '.join(sites)}. Pneumothorax is the "
        "serious complication of trigger point injection here: use a superficial, tangential "
        "technique and consider ultrasound guidance.",
        (Sources.AFP_2023, Sources.AFP_2002),
    )
