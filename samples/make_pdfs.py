"""Regenerate the two PDF documents of the sample corpus from the text kept in this file.

Why a script: PDFs are binary, so their source text lives here where it can be reviewed and diffed; the PDFs are
also committed so the corpus works without reportlab. Output is byte-for-byte reproducible (reportlab's
``invariant`` mode fixes the creation date and document id).

Run from the repository root:  .venv/bin/python samples/corpus/make_pdfs.py
Source format below: the first line is the title, ``## `` starts a heading, blank lines separate paragraphs,
and wrapped lines inside a paragraph are joined with a space. Plain ASCII only, so text extraction is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib.pagesizes import A5
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

CORPUS = Path(__file__).resolve().parent / "corpus"

APOLLO_11 = """The Apollo 11 Mission

Apollo 11 was the first crewed mission to land on the Moon. Launched by NASA in July 1969, it carried three
astronauts to lunar orbit, landed two of them on the surface and returned all three safely to Earth.

## Background

On 25 May 1961 President John F. Kennedy asked the United States Congress to commit the nation to landing a
man on the Moon and returning him safely to the Earth before the end of the decade. The Apollo programme that
followed was one of the largest engineering projects in history. It suffered a tragedy on 27 January 1967,
when a fire in the Apollo 1 command module during a launch rehearsal killed the astronauts Gus Grissom, Ed
White and Roger Chaffee. After the spacecraft was redesigned, Apollo 8 became the first crewed mission to orbit
the Moon in December 1968, and Apollo 10 flew a full dress rehearsal of the landing in May 1969 without
touching down.

## Crew and spacecraft

The commander of Apollo 11 was Neil Armstrong. Edwin "Buzz" Aldrin was the lunar module pilot, and Michael
Collins was the command module pilot. All three men had flown in space before, during the Gemini programme.

The astronauts were launched by a Saturn V rocket, a three-stage vehicle about 111 metres tall. The spacecraft
had two parts that could fly separately. The command module, named Columbia, carried the crew to the Moon and
back and was the only part that returned to Earth. The lunar module, named Eagle, was built to land on the Moon.
It had a descent stage with the landing legs and engine, and an ascent stage that carried the two astronauts
back up to lunar orbit.

## Launch and the journey to the Moon

Apollo 11 lifted off from Launch Complex 39A at the Kennedy Space Center in Florida on 16 July 1969 at 13:32
UTC. After about one and a half orbits of the Earth, the third stage of the Saturn V fired again to send the
spacecraft toward the Moon. The crew entered lunar orbit on 19 July.

## The landing

On 20 July Armstrong and Aldrin crawled into Eagle, undocked and began their descent, while Collins stayed
behind in Columbia. During the powered descent the lunar module's guidance computer raised a series of 1202
and 1201 program alarms. The alarms meant that the computer was overloaded with tasks and was restarting,
keeping only its most important jobs running. The guidance officer Steve Bales, advised by the engineer Jack
Garman, told the flight director Gene Kranz that the landing could safely continue.

As Eagle neared the surface, Armstrong saw that the automatic guidance was taking them toward a large crater
surrounded by boulders. He took partial manual control and flew the lunar module beyond the crater to a
smoother area, using much of the remaining descent fuel. Eagle touched down in the Sea of Tranquility at 20:17
UTC on 20 July 1969. Armstrong radioed: "Houston, Tranquility Base here. The Eagle has landed." Charles Duke,
the capsule communicator in Mission Control, replied that the team on the ground had been about to turn blue
and were breathing again.

## Walking on the Moon

Armstrong climbed down the ladder and stepped onto the lunar surface on 21 July 1969 at 02:56 UTC, about six
and a half hours after the landing. As he did so he said: "That's one small step for man, one giant leap for
mankind." Aldrin joined him about 19 minutes later. An estimated 650 million people around the world watched
the black-and-white television pictures of the first steps.

The moonwalk lasted about two and a half hours. The astronauts planted the flag of the United States, talked
by telephone with President Richard Nixon and collected about 21.5 kilograms of lunar rock and soil. They also
set up scientific experiments: a seismometer to detect moonquakes, a sheet of aluminium foil to trap particles
of the solar wind, and a laser ranging retroreflector. Scientists still bounce laser beams off this reflector
to measure the distance between the Earth and the Moon. A plaque fixed to one of the landing legs of Eagle
reads: "Here men from the planet Earth first set foot upon the Moon, July 1969, A.D. We came in peace for all
mankind."

## The return

While preparing to leave, Aldrin noticed that the switch of a circuit breaker needed to arm the ascent engine
had broken off. He pushed the breaker in with a felt-tip pen, and the engine worked as planned. After 21 hours
and 36 minutes on the Moon, the ascent stage of Eagle lifted off and docked with Columbia in lunar orbit. The
ascent stage was then released, and the three astronauts headed home.

Columbia splashed down in the Pacific Ocean on 24 July 1969, ending a mission that had lasted a little over 8
days and 3 hours. The crew were recovered by the aircraft carrier USS Hornet. Because scientists could not
rule out that the Moon carried harmful microbes, the astronauts spent a total of 21 days in quarantine after
their return.

## Legacy

Five more Apollo missions landed on the Moon after Apollo 11, and by the end of Apollo 17 in December 1972
twelve astronauts had walked on its surface. The command module Columbia is displayed at the Smithsonian
National Air and Space Museum in Washington, D.C.
"""

VACCINES = """How Vaccines Train the Immune System

A vaccine teaches the immune system to recognise a dangerous microbe without the person first having to
suffer the disease. It shows the body a harmless version or piece of the microbe.

## Two lines of defence

The immune system has two main branches. The innate immune system is the first line of defence. It includes
barriers such as skin and mucus and white blood cells such as neutrophils and macrophages, which engulf and
destroy invaders. Innate responses begin within minutes to hours, but they are general: they do not learn the
exact identity of a particular microbe and do not become stronger after a second encounter.

The adaptive immune system is slower to start but highly specific, and it has memory. Its main cells are two
kinds of white blood cell called lymphocytes: B cells and T cells. Each B cell or T cell carries receptors
that recognise one particular antigen, a molecule such as a protein on the surface of a virus or bacterium.

## How the adaptive response works

When a microbe enters the body, cells called dendritic cells capture its antigens and carry them to the lymph
nodes. There they present fragments of the antigens to T cells. Helper T cells, which carry the marker CD4,
coordinate the response. They help B cells that recognise the same antigen to multiply and turn into plasma
cells, which release large amounts of antibodies. Antibodies are Y-shaped proteins that bind tightly to their
antigen; they can block a virus from entering cells and mark microbes for destruction. Cytotoxic T cells,
which carry the marker CD8, find and kill body cells that have been infected.

This first, or primary, response takes about one to two weeks to reach full strength, which is why people can
become seriously ill before the immune system gains control. After the infection is cleared, most of the
responding cells die, but some remain as long-lived memory B cells and memory T cells. If the same microbe
returns, these memory cells produce a secondary response that is much faster and stronger, often stopping the
infection before any symptoms appear. A vaccine triggers a primary response without the disease, so that
protective memory cells are already in place.

## From cowpox to vaccination

The English country doctor Edward Jenner, who practised in Berkeley in Gloucestershire, noticed that
milkmaids who had caught cowpox, a mild disease, seemed to be protected from smallpox. On 14 May 1796 he took
material from a cowpox sore on the hand of the milkmaid Sarah Nelmes and inoculated James Phipps, the
eight-year-old son of his gardener. When Jenner later exposed the boy to smallpox, he did not fall ill. The
word vaccine comes from the Latin word vacca, meaning cow.

In the 1880s the French scientist Louis Pasteur showed that microbes could be weakened in the laboratory to
make vaccines against other diseases. On 6 July 1885 he gave his rabies vaccine to Joseph Meister, a
nine-year-old boy who had been bitten by a rabid dog, and the boy survived. Pasteur proposed that all such
preparations be called vaccines in honour of Jenner.

## Kinds of vaccine

Live attenuated vaccines contain a weakened form of the microbe that can still multiply a little but does not
cause serious disease. They produce strong, long-lasting immunity; the measles, mumps and rubella (MMR)
vaccine and the yellow fever vaccine are examples.

Inactivated vaccines contain microbes that have been killed. The polio vaccine developed by Jonas Salk was of
this kind, and on 12 April 1955 it was announced to be safe and effective. The later oral polio vaccine of
Albert Sabin used live weakened virus instead.

Subunit vaccines contain only selected pieces of a microbe, such as one of its proteins. The hepatitis B
vaccine and the human papillomavirus (HPV) vaccine are made this way. Toxoid vaccines, such as those against
tetanus and diphtheria, contain inactivated forms of the toxins that cause the disease rather than the
bacteria themselves.

Messenger RNA, or mRNA, vaccines give cells temporary instructions for making an antigen, such as the spike
protein of a coronavirus. The cells make the protein, the immune system responds to it, and the mRNA itself
is broken down within days. On 2 December 2020 the United Kingdom became the first country to authorise an
mRNA vaccine, the Pfizer-BioNTech vaccine against COVID-19. Katalin Kariko and Drew Weissman, whose
discoveries about modified nucleosides made mRNA vaccines possible, received the Nobel Prize in Physiology or
Medicine in 2023.

Many vaccines also contain an adjuvant, an ingredient that strengthens the immune response. Aluminium salts
have been used as adjuvants for nearly a century. Some vaccines need several doses or later booster doses to
keep memory strong; adults are usually advised to have a tetanus booster every 10 years.

## Herd immunity and eradication

When a large enough share of a population is immune, a contagious disease can no longer spread easily from
person to person. This herd immunity also protects people who cannot be vaccinated, such as newborn babies
and people with weakened immune systems. The share needed depends on how contagious the disease is: for
measles, one of the most contagious diseases known, about 95 percent of people must be immune.

Vaccination has already eradicated one human disease. The last natural case of smallpox occurred in Somalia
in October 1977, and the World Health Assembly declared smallpox eradicated on 8 May 1980.

## Testing for safety

Before a vaccine is licensed it passes through three phases of clinical trials. Phase I trials give the
vaccine to a small number of healthy volunteers to check its safety. Phase II trials involve hundreds of
people and help choose the dose. Phase III trials involve thousands or tens of thousands of people and test
whether the vaccine actually prevents disease. Safety monitoring continues after a vaccine is in use, so that
rare side effects can be detected.
"""


@dataclass(frozen=True)
class PdfSpec:
    """One PDF of the corpus: where it goes, its metadata, and its source text."""

    relative_path: str
    subject: str
    source: str

    @property
    def title(self) -> str:
        return self.source.splitlines()[0].strip()


PDFS = [
    PdfSpec("history/apollo_11.pdf", "Spaceflight history", APOLLO_11),
    PdfSpec("science/vaccines.pdf", "Immunology", VACCINES),
]


def blocks(source: str) -> list[tuple[str, str]]:
    """Split the source into ("title" | "heading" | "para", text) blocks, joining wrapped lines."""
    out: list[tuple[str, str]] = []
    for index, raw in enumerate(source.strip().split("\n\n")):
        text = " ".join(line.strip() for line in raw.splitlines() if line.strip())
        if index == 0:
            out.append(("title", text))
        elif text.startswith("## "):
            out.append(("heading", text[3:]))
        else:
            out.append(("para", text))
    return out


def build(spec: PdfSpec, root: Path = CORPUS) -> Path:
    """Write one PDF with its Title metadata set; A5 pages so each document spans several pages."""
    non_ascii = sorted({ch for ch in spec.source if ord(ch) > 127})
    if non_ascii:
        raise ValueError(f"{spec.relative_path}: keep the source ASCII, found {non_ascii}")
    path = root / spec.relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontName="Times-Roman", fontSize=11, leading=14)
    style_for = {"title": styles["Title"], "heading": styles["Heading2"], "para": body}
    story = []
    for kind, text in blocks(spec.source):
        story.append(Paragraph(escape(text), style_for[kind]))
        if kind == "para":
            story.append(Spacer(1, 2 * mm))

    def footer(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.drawCentredString(A5[0] / 2, 10 * mm, f"Page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(
        str(path),
        pagesize=A5,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=18 * mm,
        title=spec.title,
        author="ragkit sample corpus",
        subject=spec.subject,
        creator="samples/corpus/make_pdfs.py",
        invariant=1,
    )
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return path


def main() -> None:
    for spec in PDFS:
        path = build(spec)
        print(f"wrote {path.relative_to(CORPUS)} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
