"""Corpus-only adaptation of a dense retriever (the GPL setting): no labels, no training queries.

    pseudo_queries  queries made from the corpus itself (titles, body sentences, several per document
                    on small corpora), each with its positive (the document without the query's text)
                    and the trivial-pair check (query still copied verbatim in its positive)
    teacher         full-corpus signals (BM25, all-mpnet-base-v2, the MiniLM student), their
                    pool-relative standard scores, weighted combinations, the source-document metrics
                    a held-out synthetic query is scored with
    recipe          training rows (round-trip filter, teacher-ranked hard negatives, teacher margins)
                    and the candidate recipes, chosen on held-out synthetic queries only
    arm             the corpus-only arm end to end on a DOCUMENTS table (no qrels, no queries needed)
"""
