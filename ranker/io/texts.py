"""Document text by docno, read from one or more collection files.

Rerankers need the text of each candidate; :class:`TextSource` reads it once from collection files
(any format :func:`ranker.io.formats.iter_collection` reads) and answers ``docno -> contents``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

from ranker.errors import RankerError
from ranker.io.formats import PathLike, iter_collection


class MissingTextError(RankerError, KeyError):
    """A docno none of the collection files holds (a ``KeyError`` too, so ``Mapping.get`` and ``in`` work)."""

    def __str__(self) -> str:
        return str(self.args[0])


class TextSource(Mapping[str, str]):
    """Read-only ``docno -> text`` over collection files; the text is :attr:`ranker.types.Doc.contents`.

    Args:
        paths: Collection files, read in order; a docno seen again keeps its first text.
        only: If given, keep only these docnos (saves memory on large collections).
    """

    def __init__(self, paths: Iterable[PathLike], only: Collection[str] | None = None):
        self.paths = [Path(p) for p in paths]
        self._texts: dict[str, str] = {}
        for path in self.paths:
            for doc in iter_collection(path):
                if (only is None or doc.docno in only) and doc.docno not in self._texts:
                    self._texts[doc.docno] = doc.contents

    def __getitem__(self, docno: str) -> str:
        try:
            return self._texts[docno]
        except KeyError:
            names = ", ".join(str(p) for p in self.paths)
            raise MissingTextError(f"no text for document {docno!r} in {names}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def require(self, docnos: Iterable[str]) -> None:
        """Raise :class:`MissingTextError` naming the first of ``docnos`` that has no text."""
        for docno in docnos:
            self[docno]


def texts_for(paths: Iterable[PathLike], docnos: Collection[str]) -> Mapping[str, str]:
    """Text of exactly ``docnos``; raises :class:`MissingTextError` naming one that no file holds."""
    source = TextSource(paths, only=set(docnos))
    source.require(docnos)
    return source
