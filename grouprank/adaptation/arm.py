"""The corpus-only arm: from a DOCUMENTS table alone to a fine-tuned student, every choice made on
held-out synthetic queries (no human query or label is read here).

    arm = CorpusArm(documents, work_dir, AdaptationConfig(), Student(), seed=13)
    result = arm.run()            # result["chosen"], result["model_dir"], result["validation"], ...

Steps (each timed in `stage_wall_s`):
  pseudo_queries  `pseudo_queries.make_pseudo_queries` (2 per document below `small_corpus` docs, else
                  1); a seeded `holdout` share of the documents (at most `max_holdout`) keeps its
                  view-0 query for validation only; trivial pairs are counted and left out of both
  generate_queries  with `generated_docs` and a `generate` function: an LLM question for that many
                  seeded training documents, one more view (training only: validation stays extractive,
                  so every candidate is chosen on the same held-out queries)
  encode          BM25 index, MiniLM (the student, `Student.tokens`) and all-mpnet-base-v2
                  (`mpnet_tokens`) over the corpus; per view the documents that lost a query span are
                  indexed/encoded again in their stripped form (the query must not be found by its copy)
  teacher_select  every candidate of `teacher.TEACHERS` (but the student alone) scores the held-out
                  synthetic queries by their source document; the best nDCG@10 teaches
  build_rows      `recipe.training_rows` for the training queries (at most `max_train_rows`)
  train/<recipe>  fine-tune the student per candidate recipe; score it on the held-out synthetic queries
                  over the stripped corpus, like the teachers
  choose          `choose_recipe`: the recipe with the best held-out nDCG@10 among those that do not score
                  above the teacher; the base student when none beats it
"""
from __future__ import annotations

import hashlib
import logging
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from grouprank.text import document_texts

from .config import AdaptationConfig, Student
from .pseudo_queries import PseudoQuery, generated_view, make_pseudo_queries
from .recipe import RECIPES, training_rows
from .teacher import TEACHERS, Pools, bm25_matrix, dense_ranks, source_metrics, teacher_ranks

log = logging.getLogger(__name__)


def _digest(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def choose_recipe(scores: dict[str, float], teacher: float, *, keep_base: bool = True) -> tuple[str, list[str]]:
    """(chosen, not trusted) from each model's held-out synthetic nDCG@10 (`scores`, "base" included) and
    the teacher's on the same queries.

    A student that finds the pseudo-queries' source documents better than the teacher it learnt from
    has learnt more than the teacher's relevance: the extraction itself (which document lost this
    sentence). Its synthetic score then no longer predicts the test, so it is not chosen. Measured
    once: on TREC DL19 both recipes passed the teacher (0.312, 0.308 vs 0.294) and fell below the base
    on the test (0.665, 0.648 vs 0.678); on Cranfield, CISI, NPL and SciFact every recipe stayed
    under its teacher (bench/results/adapt/*.json, side_by_side). The rule was written after seeing
    DL19: one collection supports it so far.
    """
    beyond = sorted(n for n, v in scores.items() if n != "base" and v > teacher)
    trusted = {n: v for n, v in scores.items() if n not in beyond}
    best = max(trusted, key=lambda n: (trusted[n], n != "base"))
    if not keep_base and best == "base" and len(trusted) > 1:
        best = max((n for n in trusted if n != "base"), key=lambda n: trusted[n])
    return best, beyond


class CorpusArm:
    def __init__(self, documents, work_dir: str | Path, settings: AdaptationConfig | None = None,
                 student: Student | None = None, *, seed: int = 13, progress: Callable[[str], None] | None = None,
                 on_step: Callable[[str], None] | None = None,
                 generate: Callable[[list[str]], list[dict]] | None = None):
        """`generate(doc_ids)` -> QUERIES records of LLM-generated queries for those documents
        (`queries.generation.generate_queries` on a client); needed when `generated_docs` > 0."""
        self.s = settings or AdaptationConfig()
        self.generate = generate
        self.student = student or Student()
        self.seed = seed
        self.work = Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.say = progress or log.info
        self.on_step = on_step or (lambda name: None)  # after each timed step (a stage's progress)
        self.ids, self.texts = document_texts(documents)
        self.titles = (documents.column("title").to_pylist() if "title" in documents.column_names
                       else [None] * len(self.ids))
        self.bodies = [str(x or "") for x in documents.column("text").to_pylist()]
        self.pos = {d: i for i, d in enumerate(self.ids)}
        self.stage_wall_s: dict[str, float] = {}
        self._bm25 = None
        self._D: dict[str, np.ndarray] = {}
        self.student_vectors: dict[str, np.ndarray] = {}  # recipe -> its model's original-corpus vectors

    # --- timing, encoding ------------------------------------------------------------------
    def _timed(self, name: str, t0: float) -> None:
        self.stage_wall_s[name] = round(self.stage_wall_s.get(name, 0.0) + time.time() - t0, 1)
        self.say(f"{name}: {self.stage_wall_s[name]} s")
        self.on_step(name)

    def encoder(self, model: str, tokens: int, fresh: bool = False):
        from grouprank.first_stage.dense import forget_model, get_encoder, resolve_backend, resolve_model
        if fresh:
            forget_model(resolve_model(model))
        return get_encoder(model, resolve_backend(self.student.backend), max_seq_length=tokens)

    def encode(self, model: str, tokens: int, texts: list[str], *, cache: bool = True) -> np.ndarray:
        """Document vectors (cached in the work dir by model, backend, tokens and texts)."""
        from grouprank.first_stage.dense import resolve_backend
        backend = resolve_backend(self.student.backend)
        f = self.work / "emb" / f"{Path(model).name}-{backend}-{tokens}-{_digest(texts)}.npy"
        if cache and f.exists():
            return np.load(f)
        v = np.asarray(self.encoder(model, tokens).encode_documents(texts), dtype=np.float32)
        if cache:  # atomically: a killed run leaves no half-written file to load next time
            from grouprank.atomic import atomic_write
            atomic_write(f, lambda tmp: np.save(open(tmp, "wb"), v))
        return v

    def corpus_vectors(self, which: str) -> np.ndarray:
        if which not in self._D:
            model, tok = ((self.student.model, self.student.tokens) if which == "minilm"
                          else ("all-mpnet-base-v2", self.s.mpnet_tokens))
            self._D[which] = self.encode(model, tok, self.texts)
        return self._D[which]

    def bm25(self):
        if self._bm25 is None:
            from grouprank.first_stage.bm25 import BM25Retriever
            self._bm25 = BM25Retriever().index(self.ids, self.texts)
        return self._bm25

    def signal_scores(self, queries: list[str], view_texts: list[str] | None = None,
                      changed: list[int] | None = None) -> dict[str, np.ndarray]:
        """Full-corpus scores [n_queries, n_docs] of each signal; with `view_texts`, the documents at
        `changed` are scored in their view (stripped) form."""
        from grouprank.first_stage.bm25 import BM25Retriever
        corpus = view_texts or self.texts
        bm = BM25Retriever().index(self.ids, corpus) if view_texts is not None else self.bm25()
        out = {"bm25": bm25_matrix(bm, queries)}
        for sig, (model, tok) in {"minilm": (self.student.model, self.student.tokens),
                                  "mpnet": ("all-mpnet-base-v2", self.s.mpnet_tokens)}.items():
            D = self.corpus_vectors(sig)
            if changed:
                D = D.copy()
                D[changed] = self.encode(model, tok, [corpus[i] for i in changed])
            Q = self.encoder(model, tok).encode_queries(queries)
            out[sig] = (Q @ D.T).astype(np.float32)
        return out

    # --- the arm ---------------------------------------------------------------------------
    def run(self) -> dict:
        s = self.s
        per_doc, views, held, train_q, n_trivial, kinds = self._pseudo_queries()
        generated = self._generated(views, held, train_q)
        # validation pools: view 0 with the held-out documents stripped of their query
        t0 = time.time()
        self.corpus_vectors("minilm"), self.corpus_vectors("mpnet"), self.bm25()
        self._timed("encode_corpus", t0)
        t0 = time.time()
        val_texts, val_changed = self._view(held)
        val_scores = self.signal_scores([q.text for q in held], val_texts, val_changed)
        val_targets = [self.pos[q.doc_id] for q in held]
        val_pools = Pools(val_scores, s.depth)
        del val_scores
        self._timed("encode_views", t0)

        t0 = time.time()
        validation = {"teachers": {}, "recipes": {}}
        for name in s.teachers:
            validation["teachers"][name] = source_metrics(teacher_ranks(val_pools, TEACHERS[name], val_targets))
        chosen_teacher = max(s.teachers, key=lambda n: (validation["teachers"][n]["nDCG@10"], n))
        self._timed("teacher_select", t0)
        self.say(f"teacher on held-out synthetic queries: {chosen_teacher} "
                 f"{validation['teachers'][chosen_teacher]}")
        rows, row_stats = self._training_rows(train_q, len(views), chosen_teacher)
        models, train_info = self._train_recipes(rows, held, val_texts, val_changed, val_targets, validation)
        ceiling = validation["teachers"][chosen_teacher]["nDCG@10"]
        best, beyond = choose_recipe({n: validation["recipes"][n]["nDCG@10"] for n in models}, ceiling,
                                     keep_base=s.keep_base_unless_better)
        if beyond:
            self.say(f"not trusted (held-out synthetic above the teacher's {ceiling}): {beyond}")
        return {"settings": {**s.model_dump(mode="json"), "seed": self.seed},
                "pseudo_queries": {"per_doc": per_doc, "views": [len(v) for v in views], "by_kind": kinds,
                                   "trivial": n_trivial, "held_out": len(held), "labelled": len(train_q),
                                   "generated": generated,
                                   "examples": [{"kind": q.kind, "query": q.text, "doc_id": q.doc_id,
                                                 "trivial": q.trivial} for q in views[0][:3]]},
                "teacher": chosen_teacher, "teacher_weights": TEACHERS[chosen_teacher],
                "train_rows": len(rows), "row_stats": row_stats, "train": train_info,
                "validation": validation, "beyond_teacher": beyond, "chosen": best, "model_dir": models[best],
                "models": models,
                "stage_wall_s": dict(self.stage_wall_s)}

    def _pseudo_queries(self):
        """Pseudo-queries in `per_doc` views; a seeded held-out set of view 0 (their documents out of
        training), the queries to label (capped) -> (per_doc, views, held, train_q, n_trivial, kinds)."""
        s = self.s
        t0 = time.time()
        per_doc = s.per_doc or (2 if len(self.ids) < s.small_corpus else 1)
        views = make_pseudo_queries(self.ids, self.titles, self.bodies, per_doc=per_doc, seed=self.seed)
        rng = random.Random(self.seed)
        ok0 = [q for q in views[0] if not q.trivial]
        n_hold = min(s.max_holdout, max(1, int(round(s.holdout * len(ok0)))))
        held = rng.sample(ok0, n_hold) if ok0 else []
        held_docs = {q.doc_id for q in held}
        train_q = [q for v in views for q in v if q.doc_id not in held_docs and not q.trivial]
        n_trivial = sum(q.trivial for v in views for q in v)
        # the teacher filter keeps ~2/3 of the queries: label 1.6x the rows wanted, no more
        cap = int(s.max_train_rows * 1.6)
        if len(train_q) > cap:
            train_q = rng.sample(train_q, cap)
        kinds = {}
        for q in (q for v in views for q in v):
            k = kinds.setdefault(q.kind, {"made": 0, "trivial": 0})
            k["made"] += 1
            k["trivial"] += int(q.trivial)
        self._timed("pseudo_queries", t0)
        self.say(f"{sum(map(len, views))} pseudo-queries in {per_doc} view(s), {n_trivial} trivial; "
                 f"{len(held)} held out, {len(train_q)} to label")
        return per_doc, views, held, train_q, n_trivial, kinds

    def _generated(self, views: list, held: list[PseudoQuery], train_q: list[PseudoQuery]) -> dict | None:
        """LLM-generated questions for `generated_docs` seeded training documents (never a held-out
        one): appended as one more view to `views` and to `train_q` (in place) -> counts by decision."""
        n = self.s.generated_docs
        if not n:
            return None
        if self.generate is None:
            from grouprank.errors import UserError
            raise UserError("adaptation.generated_docs needs an LLM endpoint (llm.endpoints) to generate with")
        t0 = time.time()
        held_docs = {q.doc_id for q in held}
        eligible = [d for d in self.ids if d not in held_docs]
        pick = random.Random(self.seed + 7).sample(eligible, min(n, len(eligible)))
        records = self.generate(pick)
        view, counts = generated_view(records, dict(zip(self.ids, self.texts)), len(views))
        views.append(view)
        train_q.extend(q for q in view if not q.trivial)
        self._timed("generate_queries", t0)
        self.say(f"LLM-generated questions for {len(pick)} documents: {counts}")
        return {"requested": len(pick), **counts}

    def _training_rows(self, train_q, n_views: int, teacher: str):
        """One labelling pass per view (a document is stripped of that view's span), capped at
        `max_train_rows` -> (rows frame, row stats)."""
        import pandas as pd
        s = self.s
        t0 = time.time()
        frames, stats = [], []
        for v in range(n_views):
            qs = [q for q in train_q if q.query_id.startswith(f"pq{v}-")]
            if not qs:
                continue
            vt, ch = self._view(qs)
            sc = self.signal_scores([q.text for q in qs], vt, ch)
            pools = Pools(sc, s.depth)
            del sc
            fr, st = training_rows(qs, pools, [self.pos[q.doc_id] for q in qs], self.texts,
                                   TEACHERS[teacher], keep_top=s.keep_top, neg_ranks=s.neg_ranks,
                                   margin_scale=s.margin_scale, seed=self.seed + v,
                                   doc_ids=self.ids)
            frames.append(fr)
            stats.append(st)
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(rows) > s.max_train_rows:
            llm = rows["kind"] == "llm"  # paid-for generated queries stay; the cap thins extractive ones
            keep = rows[~llm].sample(n=max(0, s.max_train_rows - int(llm.sum())), random_state=self.seed)
            rows = (pd.concat([keep, rows[llm]]) if llm.any() else keep).reset_index(drop=True)
        self.last_rows = rows
        self._timed("build_rows", t0)
        row_stats = {k: sum(st[k] for st in stats) for k in (stats[0] if stats else {})}
        row_stats["rows_by_kind"] = {str(k): int(v) for k, v in sorted(rows["kind"].value_counts().items())} \
            if len(rows) else {}
        self.say(f"training rows: {len(rows)} ({row_stats})")
        return rows, row_stats

    def _train_recipes(self, rows, held, val_texts, val_changed, val_targets, validation: dict):
        """The base student and one model per recipe, each scored on the held-out synthetic queries
        (full stripped corpus, dense) into validation["recipes"] -> (models, train info)."""
        s = self.s
        Dval = self.corpus_vectors("minilm").copy()
        if val_changed:
            Dval[val_changed] = self.encode(self.student.model, self.student.tokens, [val_texts[i] for i in val_changed])
        Qv = self.encoder(self.student.model, self.student.tokens).encode_queries([q.text for q in held])
        validation["recipes"]["base"] = source_metrics(dense_ranks(Qv, Dval, val_targets))
        models = {"base": self.student.model}
        train_info = {}
        for rname in s.recipes:
            t0 = time.time()
            rec = RECIPES[rname]
            frame = rec.frame(rows)
            out = self.work / "models" / rname.replace("+", "_").replace("@", "_ep")
            from grouprank.retriever_training.train import train_model
            cfg = rec.train_config(max_steps=s.max_steps, train_tokens=s.train_tokens)
            r = train_model(frame, cfg, out, base_model=self.student.model, seed=self.seed,
                            max_seq_length=self.student.tokens)
            train_info[rname] = {"steps": r.steps, "train_loss": r.train_loss, "train_s": round(r.train_s, 1)}
            enc = self.encoder(str(out), self.student.tokens, fresh=True)
            # the original corpus once (kept for the caller's test), the held-out documents stripped
            self.student_vectors[rname] = np.asarray(enc.encode_documents(self.texts), dtype=np.float32)
            D = self.student_vectors[rname].copy()
            if val_changed:
                D[val_changed] = enc.encode_documents([val_texts[i] for i in val_changed])
            Q = enc.encode_queries([q.text for q in held])
            validation["recipes"][rname] = source_metrics(dense_ranks(Q, D, val_targets))
            models[rname] = str(out)
            self._timed(f"train/{rname}", t0)
            self.say(f"{rname}: held-out synthetic {validation['recipes'][rname]} ({train_info[rname]})")
        return models, train_info

    def _view(self, queries: list[PseudoQuery]) -> tuple[list[str], list[int]]:
        """The corpus with each query's document replaced by that query's positive (at most one
        query per document: queries of one view), and the changed positions."""
        texts = list(self.texts)
        changed = []
        for q in queries:
            i = self.pos[q.doc_id]
            if q.positive != texts[i]:  # an LLM query's positive is the document itself
                texts[i] = q.positive
                changed.append(i)
        return texts, sorted(set(changed))

