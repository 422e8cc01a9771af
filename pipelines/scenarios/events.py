"""The events a plan stands for: request and action events as the pipeline would see them.

`World` holds what every event of the scenario shares (the setting) and the final request
ids by serial; `World.events(plan)` gives one content's planned events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from pipelines.model import ActionEvent, ActionType, RequestEvent, RequestEventType
from pipelines.scenarios.params import Setting
from pipelines.scenarios.plan import Plan


@dataclass(frozen=True, slots=True)
class World:
    """What every event of the scenario shares, and the final request ids by serial."""

    setting: Setting
    names: Mapping[int, str]

    def request(self, plan: Plan, serial: int, event_id: str, issued_at: datetime) -> RequestEvent:
        s = self.setting
        return RequestEvent(
            event_id=event_id,
            request_id=self.names[serial],
            event_type=RequestEventType.ISSUED,
            authority=s.authority,
            authority_kind=s.authority_kind,
            jurisdiction=s.jurisdiction,
            platform=s.platform,
            content_id=plan.content_id,
            content_type=plan.content_type,
            category=plan.category,
            legal_basis=s.legal_basis,
            requested_action=s.requested_action,
            issued_at=issued_at,
        )

    def action(
        self,
        plan: Plan,
        ids: tuple[str, str],
        action: ActionType,
        at: datetime,
        *,
        names_request: bool,
        jurisdiction: str | None,
    ) -> ActionEvent:
        return ActionEvent(
            event_id=ids[0],
            action_id=ids[1],
            request_id=self.names[plan.serial] if names_request else None,
            platform=self.setting.platform,
            content_id=plan.content_id,
            action=action,
            jurisdiction=jurisdiction,
            acted_at=at,
        )

    def events(self, plan: Plan) -> tuple[list[RequestEvent], list[ActionEvent]]:
        """The planned events of one content."""
        issued = self.request(plan, plan.serial, plan.ids.issue, plan.issued_at)
        requests = [issued]
        if plan.withdraw_at is not None:
            requests.append(
                replace(
                    issued,
                    event_id=plan.ids.withdraw,
                    event_type=RequestEventType.WITHDRAWN,
                    withdrawn_at=plan.withdraw_at,
                )
            )
        if plan.second is not None:
            second = plan.second
            requests.append(self.request(plan, second.serial, second.event_id, second.issued_at))
        actions: list[ActionEvent] = []
        if plan.decline_at is not None:
            # A refusal always names its demand: an unnamed one would refuse every later
            # demand on the content too.
            actions.append(
                self.action(
                    plan,
                    plan.ids.decline,
                    ActionType.DECLINED,
                    plan.decline_at,
                    names_request=True,
                    jurisdiction=self.setting.jurisdiction,
                )
            )
        if plan.cover_at is not None:
            restricted = plan.cover_action is ActionType.RESTRICTED
            actions.append(
                self.action(
                    plan,
                    plan.ids.cover,
                    plan.cover_action,
                    plan.cover_at,
                    names_request=plan.cover_names_request,
                    jurisdiction=self.setting.jurisdiction if restricted else None,
                )
            )
        if plan.reinstatement is not None:
            r = plan.reinstatement
            # Put back where it had been withheld (or everywhere after a global take-down).
            where = (
                self.setting.jurisdiction if plan.cover_action is ActionType.RESTRICTED else None
            )
            actions.append(
                self.action(
                    plan,
                    r.reinstated_ids,
                    ActionType.REINSTATED,
                    r.reinstated_at,
                    names_request=False,
                    jurisdiction=where,
                )
            )
            actions.append(
                self.action(
                    plan,
                    r.removed_ids,
                    ActionType.REMOVED,
                    r.removed_at,
                    names_request=False,
                    jurisdiction=None,
                )
            )
        return requests, actions
