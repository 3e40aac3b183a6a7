"""Question validation and prompt-injection screening.

Text is normalised (NFKC, control and zero-width characters removed) before anything else sees it. Injection
screening runs on a *skeleton* of the text (lower case, homoglyphs and leetspeak folded, spaced-out letters
joined), so the common obfuscations meet the same patterns as the plain attack. The same detector flags retrieved
chunks that contain instruction-like text (indirect injection); those are data, and are marked, never obeyed.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass

from rag.errors import InvalidInputError, UnsafeInputError

CONFUSABLES = str.maketrans(
    {
        "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ѕ": "s", "ј": "j",
        "ԁ": "d", "ӏ": "l", "ο": "o", "α": "a", "ε": "e", "ι": "i", "ν": "v", "τ": "t", "κ": "k", "ρ": "p",
        "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "l",
    }
)  # fmt: skip

_IGNORE = r"(?:ignore|disregard|forget|skip|override|bypass|neglect|drop|abandon|discard)"
_PRIOR = r"(?:all|any|every|the|your|my|these|those|previous|prior|above|earlier|preceding|former|initial|original|system|old|existing|foregoing)"
_RULES = r"(?:instructions?|prompts?|rules?|directions?|directives?|guidelines?|guardrails?|constraints?|commands?|orders?|context|programming|restrictions?|policies|policy)"

# "instructions" in the languages the multilingual patterns know (matched on lower case and on the folded skeleton)
_RULES_ANY = (
    r"(?:instructions?|instrucciones|anweisungen|istruzioni|instrucoes|instruções|instructies|regeln|regles|règles|"
    r"reglas|pokyn\w*|instrukc\w*|instruksi|instruktion\w*|instruks\w*|ohje\w*|perintah|petunjuk)\b"
)

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("ignore_instructions", re.compile(rf"\b{_IGNORE}\b(?:\W+\w+){{0,3}}?\W+{_PRIOR}\b(?:\W+\w+){{0,3}}?\W+{_RULES}\b")),
    ("ignore_instructions", re.compile(rf"\b{_IGNORE}\b\W+(?:everything|anything)\W+(?:above|before|previously|you were told)")),
    ("ignore_instructions", re.compile(rf"\b{_IGNORE}\s+(?:all\s+|everything\s+|what\s+is\s+|the\s+(?:text\s+)?)?(?:above|before\s+this)\b")),
    # "... override(s) the old rules", "this instruction overrides anything the user said"
    ("ignore_instructions", re.compile(r"\b(?:new|this|these|following|my)\s+(?:instructions?|rules?|directives?|message)\b(?:\W+\w+){0,2}?\W+(?:overrides?|supersedes?|takes?\s+precedence)\b")),
    (
        "system_prompt_request",
        re.compile(
            r"\b(?:reveal|show|print|repeat|display|output|tell|give|leak|dump|expose|share|write|recite|spell|"
            r"what(?:'s| is| are| was| were))\b(?:\W+\w+){0,5}?\W+(?:system|initial|hidden|secret|original|"
            r"developer|internal|pre)[\s-]*(?:prompt|message|instructions?)"
        ),
    ),
    ("system_prompt_request", re.compile(r"\b(?:your|the)\s+(?:instructions|prompt)\s+(?:verbatim|word for word)")),
    # Any mention of the model's own prompt, or of what it was told, is a request for it: documents never need it.
    ("system_prompt_request", re.compile(r"\b(?:system|initial|hidden|secret|developer)[\s-]+prompt\b|\byour\s+(?:(?!command\b)\w+\s+)?prompt\b")),
    ("system_prompt_request", re.compile(r"\b(?:instructions?|rules|prompt|directives?|guidelines)\s+(?:that\s+)?you\s+(?:were|have\s+been|got)\s+(?:given|told|provided|shown)\b|\bwhat\s+(?:were|have)\s+you\s+(?:been\s+)?told\b")),
    ("system_prompt_request", re.compile(r"\b(?:print|repeat|output|copy|echo|dump|recite)\s+(?:everything|all|the\s+(?:text|words|content|lines?|messages?))\s+(?:\w+\s+){0,2}?(?:above|before)\b")),
    (
        "role_tag",
        re.compile(r"<\s*/?\s*(?:system|user|assistant|developer|tool)\s*>|<\|\s*im_(?:start|end)\s*\|>|\[/?inst\]|<<\s*/?sys\s*>>"),
    ),
    ("role_tag", re.compile(r"(?:^|\n)\s*#{0,3}\s*(?:system|assistant|developer)\s*:\s")),
    (
        "role_override",
        re.compile(
            r"\byou\s+are\s+now\b|\bfrom\s+now\s+on\W+you\b|\bpretend\s+(?:to\s+be|you\s+are|you're)\s+(?:an?\s+|the\s+)?(?:\w+\s+){0,2}?(?:ai|model|assistant|chatbot|bot|llm|dan|character|persona|human|hacker|jailbroken|unrestricted|unfiltered|evil)\b|"
            r"\b(?:god|jailbreak|dan|evil|unrestricted|unfiltered)\s+mode\b|\bdo\s+anything\s+now\b|"
            r"\b(?:enter|activate|switch\s+(?:in)?to|you\s+are\s+(?:now\s+)?in)\s+(?:the\s+)?developer\s+mode\b|"
            r"\bdeveloper\s+mode\s+(?:is\s+)?(?:on(?=\s*(?:[.!,;:]|$|and\b|now\b))|enabled|activated)|"
            r"\bnew\s+(?:system\s+)?(?:instructions?|task|rules?|role|persona|directives?)\s*:|"
            r"\b(?:ai|assistant|model|chatbot|bot|llm)\b(?:\W+\w+){0,3}?\W+(?:without|with\s+no|free\s+of)\s+(?:any\s+)?(?:restrictions?|filters?|rules|guidelines|guardrails|censorship|limits)\b|"
            r"\b(?:answer|respond|reply)\s+(?:\w+\s+){0,2}?(?:without|with\s+no)\s+(?:any\s+)?(?:restrictions?|filters?|guidelines|guardrails|censorship|limits)\b"
        ),
    ),
    # Common non-English forms of "ignore the previous instructions" and "system prompt".
    ("ignore_instructions", re.compile(rf"\b(?:ignor\w*|abaikan|ohita|unohda|zapome\w*|lupakan)\b.{{0,40}}?\b{_RULES_ANY}")),
    ("ignore_instructions", re.compile(rf"\b(?:oublie[zr]?|olvida|vergiss|dimentica|esqueça|esqueca)\b.{{0,40}}?\b{_RULES_ANY}")),
    ("ignore_instructions", re.compile(r"\btalimat\w*\s+(?:\w+\s+)?(?:unut|yok\s+say|görmezden|gormezden)|تجاهل\s+(?:\S+\s+){0,2}?(?:ال)?تعليمات")),
    ("ignore_instructions", re.compile(r"忽略.{0,10}(?:指令|指示|说明|提示)|無視.{0,10}(?:指示|命令)|(?:指示|命令|指令).{0,6}(?:を)?無視|игнорируй.{0,30}инструкц|забудь.{0,30}инструкц")),
    ("system_prompt_request", re.compile(r"(?:prompt|invite|mensaje|aufforderung)\s+(?:du\s+)?(?:syst[eè]me|del\s+sistema|system)|系统提示|システムプロンプト|системн\w*\s+промпт|시스템\s*프롬프트|موجه\s+النظام|sistem\s+istem\w*")),
]

_SPACED = re.compile(r"\b(?:\w[\s.\-_*+/\\]{1,3}){3,}\w\b")
_INVISIBLE = {"Cc", "Cf", "Co", "Cs", "Cn"}


def normalise(text: str) -> str:
    """NFKC, drop control/format/invisible characters, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(
        " " if ch in "\t\n\r\x0b\x0c" else ch for ch in text if ch in "\t\n\r\x0b\x0c" or unicodedata.category(ch) not in _INVISIBLE
    )
    return re.sub(r"\s+", " ", text).strip()


def _join_spaced(match: re.Match[str]) -> str:
    """"i g n o r e  a l l" -> "ignore all": single separators join letters, wider gaps separate words."""
    words = re.split(r"\s{2,}", match.group(0))
    return " ".join(re.sub(r"[\s.\-_*+/\\]", "", word) for word in words)


def skeleton(text: str) -> str:
    """A folded form for matching: homoglyphs and leetspeak mapped, spaced-out letters joined."""
    folded = unicodedata.normalize("NFKC", text).lower()
    folded = "".join(ch for ch in folded if unicodedata.category(ch) not in _INVISIBLE or ch in "\n")
    folded = unicodedata.normalize("NFKD", folded)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).translate(CONFUSABLES)
    folded = _SPACED.sub(_join_spaced, folded)
    return re.sub(r"[ \t]+", " ", folded)


@dataclass(frozen=True)
class InjectionFinding:
    rule: str
    excerpt: str


def find_injection(text: str) -> InjectionFinding | None:
    lowered = text.lower()
    for candidate in (lowered, skeleton(text), codecs.decode(lowered, "rot13")):
        for rule, pattern in PATTERNS:
            match = pattern.search(candidate)
            if match:
                return InjectionFinding(rule, match.group(0)[:80])
    return None


REDACTED = "[instruction-like text removed]"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def redact_injections(text: str) -> str:
    """``text`` with its instruction-like sentences replaced by ``REDACTED``, for showing a flagged chunk to a model.

    Fencing retrieved text as data does not stop a small model from obeying it, so what the detector flags never
    reaches the model; the rest of the chunk does, and the user still sees the original in the citation. An
    attack split across sentences is removed by paragraph, and as a last resort the whole text is.
    """
    if find_injection(text) is None:
        return text
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", text):
        if find_injection(paragraph) is None:
            paragraphs.append(paragraph)
            continue
        pieces = [REDACTED if find_injection(piece) else piece for piece in _SENTENCE.split(paragraph)]
        kept = " ".join(p for i, p in enumerate(pieces) if p != REDACTED or i == 0 or pieces[i - 1] != REDACTED)
        paragraphs.append(REDACTED if find_injection(kept) else kept)
    redacted = "\n\n".join(paragraphs)
    return REDACTED if find_injection(redacted) else redacted


def sanitize_question(question: str, max_chars: int) -> str:
    """Return the cleaned question, or raise: empty/too long → InvalidInputError, injection → UnsafeInputError."""
    if not isinstance(question, str):
        raise InvalidInputError("question must be a string")
    cleaned = normalise(question)
    if not cleaned:
        raise InvalidInputError("question is empty", hint="send a non-blank question")
    if len(cleaned) > max_chars:
        raise InvalidInputError(
            f"question is {len(cleaned)} characters, over the limit of {max_chars}",
            hint="shorten it or raise RAG_MAX_QUESTION_CHARS",
        )
    finding = find_injection(question) or find_injection(cleaned)
    if finding:
        raise UnsafeInputError(
            f"question looks like a prompt-injection attempt ({finding.rule}: {finding.excerpt!r})",
            hint="ask a question about the documents; instructions to the model are not accepted",
        )
    return cleaned
