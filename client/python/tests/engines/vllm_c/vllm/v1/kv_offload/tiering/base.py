"""Stand-in for vllm.v1.kv_offload.tiering.base, the LookupResult API of
vLLM 0.25 and later (TransferJob, get_finished_jobs, drain_jobs; see
../../../../../README): SecondaryTierManager and its job types with vLLM's
signatures, nothing more."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vllm.v1.kv_offload.base import (LookupResult, OffloadKey, ReqContext,
                                     RequestOffloadingContext,
                                     ScheduleEndContext)

JobId = int


@dataclass
class TransferJob:
    job_id: JobId
    keys: Collection[OffloadKey]
    chunk_ids: np.ndarray
    is_promotion: bool
    req_context: ReqContext


@dataclass
class JobResult:
    job_id: JobId
    success: bool
    successful_keys: Collection[OffloadKey] | None = None
    transfer_time: float | None = None


class SecondaryTierManager(ABC):
    medium: ClassVar[Any] = None

    def __init__(self, offloading_spec: "OffloadingSpec",
                 primary_kv_view: memoryview, tier_type: str) -> None:
        self._offloading_spec = offloading_spec
        self._primary_kv_view = primary_kv_view
        self.tier_type = tier_type
        self.locality = None

    @abstractmethod
    def lookup(self, key: OffloadKey, req_context: ReqContext) -> LookupResult:
        pass

    @abstractmethod
    def submit_store(self, job_metadata: TransferJob) -> None:
        pass

    @abstractmethod
    def submit_load(self, job_metadata: TransferJob) -> None:
        pass

    @abstractmethod
    def get_finished_jobs(self) -> Iterable[JobResult]:
        pass

    def has_pending_work(self) -> bool:
        return False

    def take_events(self) -> Iterable:
        return ()

    def touch(self, keys: Collection[OffloadKey], req_context: ReqContext):
        pass

    @abstractmethod
    def on_new_request(self, req_context: ReqContext
                       ) -> RequestOffloadingContext:
        pass

    def on_request_finished(self, req_context: ReqContext) -> None:
        pass

    def bind_parent(self, parent) -> None:
        pass

    def stop_executor(self) -> None:
        pass

    def on_schedule_end(self, context: ScheduleEndContext) -> None:
        pass

    @abstractmethod
    def drain_jobs(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    @classmethod
    def build_metric_definitions(cls, extra_config: dict[str, Any]) -> dict:
        return {}

    def get_stats(self):
        return None
