"""The Redis store kept current from the attributes topic: conditional writes in Lua.

One Redis serves the whole fleet and every replica follows the topic into it, so two replicas
write the same records, one of them possibly far behind. Each user's hash therefore carries where
its value was read (`VERSION_FIELD`: topic tag, partition, offset, record timestamp), and a Lua
script replaces a hash only when the record is newer by the rule of `versions.py`; a deleted user
keeps a hash holding just that field. The positions of the partitions (the first offset not yet
written) live in one more hash, moved forward only, in the same script as the last users of a
batch: a replica that starts resumes where the fleet got to.

Lookups and imports are those of `RedisAttributeStore`; this module only adds the followed
write path, so the two change independently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import orjson
from redis.commands.core import AsyncScript
from redis.typing import EncodableT

from consumer.attributes.redis import EMPTY_FIELD, VERSION_FIELD, RedisAttributeStore
from consumer.attributes.store import Applied, Update
from consumer.attributes.versions import newest_per_user, topic_tag

# Users per script call: one round trip each, and Redis is busy with one call at a time, so
# a call stays a few milliseconds.
_USERS_PER_CALL: Final = 500

# KEYS: the users' hashes, then the positions hash. ARGV: the version and empty-user field
# names, the topic tag; per user its partition, offset, timestamp and its fields as one JSON
# list [name, value, ...] (each value already its JSON text; null: delete the user); then
# partition/next-offset pairs. Returns {stored, deleted}. The comparison is versions.newer.
_APPLY: Final = """
local VERSION, EMPTY = ARGV[1], ARGV[2]
local tag = ARGV[3]
local users = #KEYS - 1
local i = 4
local stored, deleted = 0, 0
for k = 1, users do
  local key = KEYS[k]
  local part, offset, ms, fields = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local newer = true
  local held = redis.call('HGET', key, VERSION)
  if held then
    local htag, hpart, hoffset, hms = string.match(held, '^(%d+):(%d+):(%d+):(%-?%d+)$')
    if htag == tag then
      if hpart == part then
        newer = tonumber(offset) > tonumber(hoffset)
      else
        newer = tonumber(ms) > tonumber(hms)
      end
    end
  end
  if newer then
    local version = tag .. ':' .. part .. ':' .. offset .. ':' .. ms
    redis.call('DEL', key)  -- replaced, not merged into (an imported user has no version)
    if fields == 'null' then
      redis.call('HSET', key, VERSION, version)
      deleted = deleted + 1
    else
      local pairs = cjson.decode(fields)
      local last = #pairs
      if last == 0 then
        redis.call('HSET', key, VERSION, version, EMPTY, '')
      else
        -- The version with the first fields; unpack stays far below Lua's stack limit.
        redis.call('HSET', key, VERSION, version, unpack(pairs, 1, math.min(200, last)))
        for j = 201, last, 200 do
          redis.call('HSET', key, unpack(pairs, j, math.min(j + 199, last)))
        end
      end
      stored = stored + 1
    end
  end
end
local positions = KEYS[users + 1]
while i < #ARGV do
  local held = redis.call('HGET', positions, ARGV[i])
  if not held or tonumber(held) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', positions, ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
return {stored, deleted}
"""


class FollowedRedisStore(RedisAttributeStore):
    """`RedisAttributeStore` plus the `FollowedStore` methods."""

    _script: AsyncScript | None = None  # registered on first use

    async def positions(self, topic: str) -> dict[int, int]:
        async with self._unavailable():
            held = await self._client.hgetall(self._positions_key(topic))
        return {int(partition): int(offset) for partition, offset in held.items()}

    async def apply(
        self, topic: str, updates: Sequence[Update], positions: Mapping[int, int]
    ) -> Applied:
        tag = str(topic_tag(topic))
        latest = list(newest_per_user(topic_tag(topic), list(updates)).values())
        # Encoded before the first call: a value that is not JSON writes nothing.
        calls = [
            _arguments(tag, latest[start : start + _USERS_PER_CALL])
            for start in range(0, max(1, len(latest)), _USERS_PER_CALL)
        ]
        calls[-1][1].extend(_flat(positions))  # with the last users: all of them are written
        if self._script is None:
            self._script = self._client.register_script(_APPLY)
        script = self._script
        stored = deleted = 0
        positions_key = self._positions_key(topic)
        for users, args in calls:
            keys = [self._prefix + user_id for user_id in users]
            async with self._unavailable():
                done = await script(keys=[*keys, positions_key], args=args)
            stored += int(done[0])
            deleted += int(done[1])
        return Applied(stored, deleted, len(updates) - stored - deleted)

    def _positions_key(self, topic: str) -> bytes:
        # Not UTF-8, so no user id (a UTF-8 Kafka key) can name the same key.
        return self._prefix.encode() + b"\xffpositions:" + topic.encode()


def _arguments(tag: str, updates: list[Update]) -> tuple[list[str], list[EncodableT]]:
    args: list[EncodableT] = [VERSION_FIELD, EMPTY_FIELD, tag]
    for update in updates:
        args += [update.partition, update.offset, update.timestamp_ms, _fields(update)]
    return [u.user_id for u in updates], args


def _fields(update: Update) -> bytes:
    """The user's fields as one argument, `[name, value, ...]` with each value its JSON text
    (one argument a user, not two a field: packing them is most of the client's work)."""
    if update.attributes is None:
        return b"null"
    flat: list[str] = []
    for name, value in update.attributes.items():
        flat += [name, orjson.dumps(value).decode()]
    return orjson.dumps(flat)


def _flat(positions: Mapping[int, int]) -> list[EncodableT]:
    return [value for pair in sorted(positions.items()) for value in pair]
