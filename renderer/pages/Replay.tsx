/**
 * Session replay: a timeline with play/pause, speed (0.5×–16×), step to the next/previous event and
 * seek by clicking or dragging. LLM sessions render as a conversation whose streamed answers grow
 * at their recorded pace; PostgreSQL sessions as a psql-like transcript in xterm. Masked spans are
 * highlighted with their detector type; holds, votes and denials appear at their moment. Links to
 * the session and to each event use the hash route `#/sessions/<id>?event=<seq>`.
 */
import { type PointerEvent as ReactPointerEvent, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { AuditEvent, SessionSummary } from '../../shared/events';
import { api, toast, useAuth } from '../app/context';
import { onMessage } from '../app/live-socket';
import { navigate } from '../app/router';
import { Icon } from '../components/Icon';
import { SqlTerminal } from '../components/SqlTerminal';
import { SshTerminal } from '../components/SshTerminal';
import { Badge, Button, copyText, Empty, ErrorBox, Loading, MaskedText, Modal } from '../components/ui';
import { type Block, buildConversation, materialize, type Part } from '../lib/conversation';
import { formatClock, formatDateTime, formatDuration, formatTime, gatewayLabel, shortId } from '../lib/format';
import { recordedBy } from '../lib/sessions';
import { holdCreatedSeq } from '../lib/holds';
import { Node } from '../lib/rich';
import {
  advance,
  buildTimeline,
  changeSpeed,
  indexAt,
  play,
  type PlayerState,
  seekFraction,
  seekSeq,
  sessionMode,
  SPEEDS,
  stepNext,
  stepPrev,
  isCommand,
  type Timeline,
} from '../lib/replay';
import { capabilities } from '../lib/roles';
import { sessionLink } from '../lib/route';
import { buildTranscript } from '../lib/sql-transcript';
import { buildSshTranscript } from '../lib/ssh-transcript';

interface Loaded {
  session: SessionSummary;
  events: AuditEvent[];
  /** Another gateway's session: events whose rows in the shared store no longer match their hashes. */
  altered?: number[];
}

export function ReplayPage({ id, eventSeq, holdId }: { id: string; eventSeq?: number; holdId?: string }) {
  const [data, setData] = useState<Loaded>();
  const [error, setError] = useState<{ status: number; message: string }>();
  const load = useCallback(() => {
    setError(undefined);
    api
      .sessionEvents(id)
      .then(setData)
      .catch((err: { status?: number; message: string }) => setError({ status: err.status ?? -1, message: err.message }));
  }, [id]);
  useEffect(load, [load]);
  // A live session grows as it happens: its events arrive over the WebSocket and are appended.
  // Another gateway's session (shared store) grows as that gateway ships its events; seqs are
  // per chain, so only the messages of the gateway that records it apply.
  const self = useAuth((s) => s.gateway);
  const live = !!data && data.session.id === id && data.session.endedAt === null;
  useEffect(() => {
    if (!live) return;
    return onMessage((msg) => {
      if (msg.type === 'session.event' && msg.event.session === id)
        setData((d) => (d && recordedBy(msg.gateway, d.session, self) && !d.events.some((e) => e.seq === msg.event.seq) ? { ...d, events: [...d.events, msg.event].sort((a, b) => a.seq - b.seq) } : d));
      else if ((msg.type === 'session.ended' || msg.type === 'session.started') && msg.session.id === id)
        setData((d) => (d && recordedBy(msg.session.gateway, d.session, self) ? { ...d, session: { ...msg.session, gateway: d.session.gateway, gatewayName: d.session.gatewayName } } : d));
    });
  }, [live, id, self]);

  if (error)
    return (
      <div className="page">
        <BackLink />
        {error.status === 404 ? (
          <Empty icon="sessions" title="No such session">
            There is no recorded session <code>{id}</code>. It may have been typed wrong, or belong to another gateway.
          </Empty>
        ) : (
          <ErrorBox title="Could not open the recording" message={error.message} onRetry={load} />
        )}
      </div>
    );
  // The previous session's data stays in state until this one loads: never show it under this id.
  if (!data || data.session.id !== id) return <Loading label="Opening the recording…" />;
  // `?hold=<id>` (the link on a hold card): the replay up to the moment the hold was created.
  return <Player key={id} data={data} eventSeq={eventSeq ?? (holdId ? holdCreatedSeq(data.events, holdId) : undefined)} />;
}

/** A session recorded by another gateway of the shared store than the one this console talks to. */
function elsewhere(session: SessionSummary, self: string | undefined): boolean {
  return session.gateway !== undefined && self !== undefined && session.gateway !== self;
}

function BackLink() {
  return (
    <a className="back" href="#/sessions">
      ← Sessions
    </a>
  );
}

function Player({ data, eventSeq }: { data: Loaded; eventSeq?: number }) {
  const { session, events } = data;
  const timeline = useMemo(() => buildTimeline(events), [events]);
  const mode = useMemo(() => sessionMode(events, session.protocol), [events, session.protocol]);
  const [state, setState] = useState<PlayerState>(() => {
    const initial: PlayerState = { position: timeline.duration, playing: false, speed: 1 };
    return eventSeq !== undefined ? seekSeq(timeline, initial, eventSeq) : initial;
  });
  const [selected, setSelected] = useState<number | undefined>(eventSeq);
  const self = useAuth((s) => s.gateway);
  const remote = elsewhere(session, self);
  const live = session.endedAt === null;
  // Watching live: a player left at the end follows what arrives.
  const lastDuration = useRef(timeline.duration);
  useEffect(() => {
    const before = lastDuration.current;
    lastDuration.current = timeline.duration;
    setState((s) => (!s.playing && s.position >= before && timeline.duration > before ? { ...s, position: timeline.duration } : s));
  }, [timeline.duration]);

  // The clock: advance by wall time × speed while playing.
  useEffect(() => {
    if (!state.playing) return;
    let last = performance.now();
    let raf = 0;
    const tick = (t: number) => {
      const dt = t - last;
      last = t;
      setState((s) => advance(timeline, s, dt));
      raf = requestAnimationFrame(tick);
    };
    raf = requestAnimationFrame(tick);
    return () => cancelAnimationFrame(raf);
  }, [state.playing, timeline]);

  // Keyboard: space play/pause, ←/→ step.
  useEffect(() => {
    const on = (e: KeyboardEvent) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === ' ') {
        e.preventDefault();
        setState((s) => (s.playing ? { ...s, playing: false } : play(timeline, s)));
      } else if (e.key === 'ArrowRight') setState((s) => stepNext(timeline, s));
      else if (e.key === 'ArrowLeft') setState((s) => stepPrev(timeline, s));
    };
    window.addEventListener('keydown', on);
    return () => window.removeEventListener('keydown', on);
  }, [timeline]);

  const current = indexAt(timeline, state.position);
  const currentSeq = current >= 0 ? timeline.items[current]!.seq : undefined;
  const selectEvent = (seq: number) => {
    setSelected(seq);
    setState((s) => seekSeq(timeline, s, seq));
    navigate({ page: 'replay', param: session.id, query: { event: String(seq) } }, true);
  };
  const copyLink = (seq?: number) =>
    void copyText(sessionLink(location.origin + location.pathname.replace(/\/$/, ''), session.id, seq)).then((ok) => toast(ok ? 'ok' : 'error', ok ? `Link to ${seq !== undefined ? `event ${seq}` : 'this session'} copied` : 'Could not copy the link'));

  const title = `${session.actorName ?? session.actor ?? 'Unknown'}${session.connection ? ` on ${session.connection}` : ''}`;
  return (
    <div className="page page-fill replay" data-testid="replay" data-mode={mode}>
      <BackLink />
      <header className="replay-head">
        <div>
          <h1>{title}</h1>
          <div className="subtitle">
            <Badge>{mode === 'sql' ? 'PostgreSQL' : mode === 'llm' ? 'LLM / HTTP' : mode === 'ssh' ? 'SSH' : session.protocol}</Badge>{' '}
            {live && (
              <Badge tone="ok" title={remote ? 'This session is still open on the gateway that records it; what happens in it appears here as that gateway ships it' : 'This session is still open; what happens in it appears here as it happens'}>
                live
              </Badge>
            )} {formatDateTime(session.startedAt)} · {formatDuration((session.endedAt ?? session.lastEventAt) - session.startedAt)} · {session.requests} requests · {events.length} events
            {session.masked > 0 && <> · {session.masked} masked</>}
            {session.holds > 0 && <> · {session.holds} held</>} · <code title={session.id}>{shortId(session.id)}</code>
            {session.gateway && (
              <span data-testid="replay-gateway" title={session.gateway}>
                {' '}
                · recorded by {gatewayLabel(session.gateway, session.gatewayName)}
              </span>
            )}
          </div>
        </div>
        <div className="replay-actions">
          {live && !remote && <EndSessionButton session={session} />}
          <Button icon="link" onClick={() => copyLink()} testId="copy-session-link">
            Copy link
          </Button>
        </div>
      </header>
      {data.altered && data.altered.length > 0 && (
        <div className="banner banner-error" role="alert" data-testid="replay-altered">
          {data.altered.length} event{data.altered.length === 1 ? '' : 's'} of this recording (seq {data.altered.slice(0, 5).join(', ')}
          {data.altered.length > 5 ? ', …' : ''}) no longer match their hashes in the shared store: the copy there was changed. The recording gateway&apos;s own log still holds them; run custody verify --store.
        </div>
      )}
      <div className="replay-body">
        <div className="replay-stage">
          {events.length === 0 ? (
            <Empty icon="sessions" title="This session has no recorded events" />
          ) : mode === 'sql' ? (
            <SqlStage events={events} timeline={timeline} position={state.position} database={session.connection ?? 'db'} />
          ) : mode === 'ssh' ? (
            <SshStage events={events} timeline={timeline} position={state.position} />
          ) : mode === 'llm' ? (
            <ConversationStage events={events} timeline={timeline} position={state.position} playing={state.playing} currentSeq={currentSeq} />
          ) : (
            <EventsStage events={events} timeline={timeline} position={state.position} />
          )}
        </div>
        <EventList timeline={timeline} events={events} current={current} selected={selected} onSelect={selectEvent} onCopy={copyLink} />
      </div>
      <Controls timeline={timeline} state={state} setState={setState} commands={mode === 'ssh'} />
    </div>
  );
}

function Controls({ timeline, state, setState, commands }: { timeline: Timeline; state: PlayerState; setState: (f: (s: PlayerState) => PlayerState) => void; commands: boolean }) {
  const track = useRef<HTMLDivElement>(null);
  const dragging = useRef(false);
  const seekAt = (clientX: number) => {
    const r = track.current!.getBoundingClientRect();
    setState((s) => seekFraction(timeline, s, (clientX - r.left) / r.width));
  };
  const down = (e: ReactPointerEvent<HTMLDivElement>) => {
    dragging.current = true;
    e.currentTarget.setPointerCapture(e.pointerId);
    setState((s) => ({ ...s, playing: false }));
    seekAt(e.clientX);
  };
  const frac = timeline.duration ? state.position / timeline.duration : 1;
  return (
    <div className="controls" data-testid="replay-controls">
      <button className="icon-btn" title="Previous event (←)" onClick={() => setState((s) => stepPrev(timeline, s))} data-testid="step-prev">
        <Icon name="prev" />
      </button>
      <button className="icon-btn play" title="Play/pause (space)" onClick={() => setState((s) => (s.playing ? { ...s, playing: false } : play(timeline, s)))} data-testid="play">
        <Icon name={state.playing ? 'pause' : 'play'} size={18} />
      </button>
      <button className="icon-btn" title="Next event (→)" onClick={() => setState((s) => stepNext(timeline, s))} data-testid="step-next">
        <Icon name="next" />
      </button>
      {commands && (
        <>
          <button className="icon-btn" title="Previous command" aria-label="Previous command" onClick={() => setState((s) => stepPrev(timeline, s, isCommand))} data-testid="step-prev-command">
            <Icon name="prev" />$
          </button>
          <button className="icon-btn" title="Next command" aria-label="Next command" onClick={() => setState((s) => stepNext(timeline, s, isCommand))} data-testid="step-next-command">
            $<Icon name="next" />
          </button>
        </>
      )}
      <span className="clock mono" data-testid="clock">
        {formatClock(state.position)} / {formatClock(timeline.duration)}
      </span>
      <div
        className="track"
        ref={track}
        onPointerDown={down}
        onPointerMove={(e) => dragging.current && seekAt(e.clientX)}
        onPointerUp={() => (dragging.current = false)}
        data-testid="timeline"
        role="slider"
        aria-label="Position in the recording"
        aria-valuemin={0}
        aria-valuemax={timeline.duration}
        aria-valuenow={state.position}
      >
        <div className="track-fill" style={{ width: `${frac * 100}%` }} />
        {timeline.items
          .filter((i) => i.tone !== 'chunk')
          .map((i) => (
            <span key={i.seq} className={`tick tick-${i.tone}`} style={{ left: `${timeline.duration ? (i.at / timeline.duration) * 100 : 0}%` }} title={`${formatClock(i.at)} ${i.label}`} />
          ))}
        <span className="playhead" style={{ left: `${frac * 100}%` }} />
      </div>
      <select className="input speed" value={state.speed} onChange={(e) => setState((s) => changeSpeed(s, Number(e.target.value)))} data-testid="speed" title="Playback speed" aria-label="Playback speed">
        {SPEEDS.map((s) => (
          <option key={s} value={s}>
            {s}×
          </option>
        ))}
      </select>
    </div>
  );
}

const TONE_LABEL: Record<string, string> = {
  request: 'request',
  response: 'response',
  chunk: 'chunk',
  decision: 'policy',
  hold: 'hold',
  approve: 'approved',
  deny: 'denied',
  error: 'error',
  info: 'info',
};

function EventList({ timeline, events, current, selected, onSelect, onCopy }: { timeline: Timeline; events: AuditEvent[]; current: number; selected?: number; onSelect: (seq: number) => void; onCopy: (seq: number) => void }) {
  const listRef = useRef<HTMLOListElement>(null);
  const [showChunks, setShowChunks] = useState(false);
  const items = timeline.items.filter((i) => showChunks || i.tone !== 'chunk' || i.seq === selected);
  const chunkCount = timeline.items.length - timeline.items.filter((i) => i.tone !== 'chunk').length;
  const currentSeq = timeline.items[current]?.seq;
  useEffect(() => {
    listRef.current?.querySelector('.ev.current')?.scrollIntoView({ block: 'nearest' });
  }, [currentSeq]);
  const sel = events.find((e) => e.seq === selected);
  return (
    <aside className="event-panel">
      <div className="event-panel-head">
        <span>Events</span>
        {chunkCount > 0 && (
          <label className="check small">
            <input type="checkbox" checked={showChunks} onChange={(e) => setShowChunks(e.target.checked)} /> {chunkCount} chunks
          </label>
        )}
      </div>
      <ol className="events" ref={listRef}>
        {items.map((i) => (
          <li key={i.seq} className={`ev ev-${i.tone}${i.seq === currentSeq ? ' current' : ''}${i.seq === selected ? ' selected' : ''}${i.index > current ? ' future' : ''}`} onClick={() => onSelect(i.seq)} data-testid="event-item" data-seq={i.seq}>
            <span className="ev-time mono">{formatClock(i.at)}</span>
            <span className={`ev-dot dot-${i.tone}`} title={TONE_LABEL[i.tone]} />
            <span className="ev-label truncate" title={i.label}>
              {i.label}
            </span>
            {i.masked > 0 && (
              <span className="ev-mask" title={`${i.masked} masked value${i.masked === 1 ? '' : 's'}`}>
                {i.masked}
              </span>
            )}
            <button
              className="icon-btn ev-link"
              title="Copy a link to this event"
              onClick={(e) => {
                e.stopPropagation();
                onCopy(i.seq);
              }}
            >
              <Icon name="link" size={13} />
            </button>
          </li>
        ))}
      </ol>
      {sel && <EventDetail event={sel} />}
    </aside>
  );
}

function EventDetail({ event }: { event: AuditEvent }) {
  const json = useMemo(() => Node.root(event.payload, event.spans).jsonRich(), [event]);
  return (
    <div className="event-detail" data-testid="event-detail">
      <div className="event-detail-head">
        <code>#{event.seq}</code> {event.kind} · {formatTime(event.time)}
      </div>
      <div className="muted small mono" title={event.hash}>
        hash {event.hash.slice(0, 16)}… · actor {event.actor ?? '—'}
      </div>
      <pre className="payload">{event.payload === null ? <span className="muted">payload purged by retention (its hash remains)</span> : <MaskedText value={json} />}</pre>
    </div>
  );
}

// ---- LLM / HTTP conversation -----------------------------------------------------------------

const ROLE_LABEL: Record<string, string> = { system: 'System', developer: 'Developer', user: 'User', assistant: 'Assistant', tool: 'Tool result', request: 'Request' };

function ConversationStage({ events, timeline, position, playing, currentSeq }: { events: AuditEvent[]; timeline: Timeline; position: number; playing: boolean; currentSeq?: number }) {
  const convo = useMemo(() => buildConversation(events, timeline), [events, timeline]);
  const visible = convo.blocks.filter((b) => b.at <= position);
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (playing && ref.current) ref.current.scrollTop = ref.current.scrollHeight;
  }, [playing, position]);
  useEffect(() => {
    if (!playing && currentSeq !== undefined) ref.current?.querySelector(`[data-seq="${currentSeq}"]`)?.scrollIntoView({ block: 'nearest' });
  }, [currentSeq, playing]);
  return (
    <div className="conversation" ref={ref} data-testid="conversation">
      {visible.length === 0 && <div className="muted center pad">Press play to replay this session.</div>}
      {visible.map((b, i) => (
        <ConversationBlock key={`${b.type}-${b.seq}-${i}`} block={b} position={position} current={b.seq === currentSeq} />
      ))}
    </div>
  );
}

function ConversationBlock({ block: b, position, current }: { block: Block; position: number; current: boolean }) {
  switch (b.type) {
    case 'exchange':
      return (
        <div className={`exchange-head${current ? ' current' : ''}`} data-seq={b.seq}>
          <span className="mono">
            {b.method} {b.path}
          </span>
          {b.model && <Badge>{b.model}</Badge>}
          {b.stream && <Badge tone="accent">stream</Badge>}
          {b.tools.length > 0 && <span className="muted small">tools: {b.tools.join(', ')}</span>}
          {b.status !== undefined && <Badge tone={b.status < 400 ? 'ok' : 'danger'}>{b.status}</Badge>}
        </div>
      );
    case 'turn':
      return (
        <div className={`msg msg-${b.turn.role}`} data-seq={b.seq} data-testid="msg" data-role={b.turn.role}>
          <div className="msg-role">{ROLE_LABEL[b.turn.role] ?? b.turn.role}</div>
          <div className="msg-body">
            {b.turn.parts.map((p, i) => (
              <PartView key={i} part={p} />
            ))}
          </div>
        </div>
      );
    case 'output': {
      const parts = materialize(b.ops, position);
      const streaming = position < b.endAt;
      if (!parts.length && !streaming) return null;
      if (b.status !== undefined && b.status >= 400)
        return (
          <div className="notice notice-error" data-seq={b.seq} data-testid="notice" data-tone="error">
            <Icon name="x" size={14} />
            <span>
              {b.status} —{' '}
              {parts.map((p) => (
                <MaskedText key={p.block} value={p.text} />
              ))}
            </span>
          </div>
        );
      return (
        <div className="msg msg-assistant" data-seq={b.seq} data-testid="msg" data-role="assistant">
          <div className="msg-role">Assistant</div>
          <div className="msg-body">
            {parts.map((p) =>
              p.kind === 'tool' ? (
                <div key={p.block} className="tool-call">
                  <div className="tool-head">
                    <Icon name="terminal" size={13} /> calls <strong className="mono">{p.name ?? 'tool'}</strong>
                    {p.id && <span className="muted small mono"> {p.id}</span>}
                  </div>
                  <pre className="mono">
                    <MaskedText value={p.text} />
                  </pre>
                </div>
              ) : (
                <div key={p.block} className={p.kind === 'json' ? 'text json' : 'text'}>
                  <MaskedText value={p.text} />
                </div>
              ),
            )}
            {streaming && <span className="caret" />}
          </div>
        </div>
      );
    }
    case 'notice':
      return (
        <div className={`notice notice-${b.tone}`} data-seq={b.seq} data-testid="notice" data-tone={b.tone}>
          <Icon name={b.tone === 'approve' ? 'check' : b.tone === 'deny' || b.tone === 'error' ? 'x' : b.tone === 'hold' ? 'clock' : 'shield'} size={14} />
          <span>
            {b.title}
            {b.detail && (
              <span className="notice-detail">
                {' '}
                — <MaskedText value={b.detail} />
              </span>
            )}
          </span>
        </div>
      );
  }
}

function PartView({ part }: { part: Part }) {
  switch (part.kind) {
    case 'text':
      return (
        <div className="text">
          <MaskedText value={part.text} />
        </div>
      );
    case 'json':
      return (
        <pre className="text json mono">
          <MaskedText value={part.text} />
        </pre>
      );
    case 'tool_call':
      return (
        <div className="tool-call">
          <div className="tool-head">
            <Icon name="terminal" size={13} /> calls <strong className="mono">{part.name}</strong>
            {part.id && <span className="muted small mono"> {part.id}</span>}
          </div>
          <pre className="mono">
            <MaskedText value={part.args} />
          </pre>
        </div>
      );
    case 'tool_result':
      return (
        <div className="tool-result">
          <div className="tool-head">
            <Icon name="check" size={13} /> result{part.id && <span className="muted small mono"> for {part.id}</span>}
          </div>
          <pre className="mono">
            <MaskedText value={part.content} />
          </pre>
        </div>
      );
  }
}

// ---- PostgreSQL ------------------------------------------------------------------------------

function SqlStage({ events, timeline, position, database }: { events: AuditEvent[]; timeline: Timeline; position: number; database: string }) {
  const entries = useMemo(() => buildTranscript(events, timeline, database), [events, timeline, database]);
  return <SqlTerminal entries={entries} position={position} />;
}

// ---- SSH -------------------------------------------------------------------------------------

function SshStage({ events, timeline, position }: { events: AuditEvent[]; timeline: Timeline; position: number }) {
  const entries = useMemo(() => buildSshTranscript(events, timeline), [events, timeline]);
  return <SshTerminal entries={entries} position={position} />;
}

/** Ends a live session with a reason (approvers and admins): recorded, told to the client, its connection closed. */
function EndSessionButton({ session }: { session: SessionSummary }) {
  const me = useAuth((s) => s.me);
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  if (!capabilities(me).decideHolds || session.protocol !== 'ssh') return null;
  const submit = () => {
    if (!reason.trim()) return setError('Say why: the reason is recorded and shown to the person in the session.');
    setBusy(true);
    setError(undefined);
    api
      .endSession(session.id, reason.trim())
      .then(() => {
        toast('ok', 'Session ended');
        setOpen(false);
      })
      .catch((err: Error) => setError(err.message))
      .finally(() => setBusy(false));
  };
  return (
    <>
      <Button kind="danger" icon="x" onClick={() => setOpen(true)} testId="end-session">
        End session
      </Button>
      {open && (
        <Modal
          title="End this session"
          onClose={() => setOpen(false)}
          footer={
            <>
              <Button kind="ghost" onClick={() => setOpen(false)}>
                Cancel
              </Button>
              <Button kind="danger" onClick={submit} disabled={busy} testId="end-session-confirm">
                End session
              </Button>
            </>
          }
        >
          <p>
            Every open channel of {session.actorName ?? session.actor ?? 'this client'}'s session is told the reason and closed, and the connection is cut. The ending is recorded with your name.
          </p>
          <textarea className="input" rows={3} placeholder="Reason (required)" value={reason} onChange={(e) => setReason(e.target.value)} data-testid="end-session-reason" aria-label="Reason" />
          {error && (
            <div className="field-error" role="alert">
              {error}
            </div>
          )}
        </Modal>
      )}
    </>
  );
}

// ---- anything else: the raw events ----------------------------------------------------------

function EventsStage({ events, timeline, position }: { events: AuditEvent[]; timeline: Timeline; position: number }) {
  const upTo = indexAt(timeline, position);
  return (
    <div className="conversation">
      {events
        .filter((_, i) => i <= upTo)
        .map((e) => (
          <div key={e.seq} className="raw-event" data-seq={e.seq}>
            <div className="muted small">
              #{e.seq} {e.kind} · {formatTime(e.time)}
            </div>
            <pre className="payload">
              <MaskedText value={Node.root(e.payload, e.spans).jsonRich()} />
            </pre>
          </div>
        ))}
    </div>
  );
}
