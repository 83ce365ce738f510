/**
 * Dashboard: requests, holds by outcome, masked values (over time and by detector type), policy
 * denials and rule hits, as inline SVG charts over a chosen window. With a shared store the figures
 * are every gateway's, and a card shows each gateway's share.
 */
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';
import { api } from '../app/context';
import { onMessage } from '../app/live-socket';
import { FirstSteps } from '../components/FirstSteps';
import { Empty, ErrorBox, Loading, PageHeader, Tabs } from '../components/ui';
import type { DashboardData } from '../../shared/dashboard';
import { areaPath, bucketLabel, countAxis, linePath, stackedBars } from '../lib/charts';
import { formatCount, gatewayLabel } from '../lib/format';

const RANGES = [
  { id: '24h', label: '24 hours', ms: 86_400_000, buckets: 24 },
  { id: '7d', label: '7 days', ms: 7 * 86_400_000, buckets: 28 },
  { id: '30d', label: '30 days', ms: 30 * 86_400_000, buckets: 30 },
] as const;
type RangeId = (typeof RANGES)[number]['id'];

function useWidth<T extends HTMLElement>(): [React.RefObject<T | null>, number] {
  const ref = useRef<T>(null);
  const [w, setW] = useState(600);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setW(el.clientWidth));
    ro.observe(el);
    setW(el.clientWidth);
    return () => ro.disconnect();
  }, []);
  return [ref, w];
}

export function DashboardPage() {
  const [range, setRange] = useState<RangeId>('24h');
  const [data, setData] = useState<DashboardData>();
  const [error, setError] = useState<string>();
  const load = useCallback(() => {
    const r = RANGES.find((x) => x.id === range)!;
    const to = Date.now();
    api
      .dashboard(to - r.ms, to, r.buckets)
      .then((d) => {
        setData(d);
        setError(undefined);
      })
      .catch((e: Error) => setError(e.message));
  }, [range]);
  useEffect(load, [load]);
  // Refresh when holds resolve or sessions end, at most every few seconds.
  useEffect(() => {
    let pending: ReturnType<typeof setTimeout> | undefined;
    const off = onMessage((m) => {
      if ((m.type === 'hold.resolved' || m.type === 'session.ended' || m.type === 'session.started') && !pending) pending = setTimeout(() => ((pending = undefined), load()), 3000);
    });
    return () => {
      off();
      if (pending) clearTimeout(pending);
    };
  }, [load]);

  return (
    <div className="page">
      <PageHeader title="Dashboard" subtitle={data?.gateways ? `What went through the ${data.gateways.length} gateways of the group, what was held, masked and denied.` : 'What went through the gateway, what was held, masked and denied.'} actions={<Tabs tabs={RANGES.map((r) => ({ id: r.id, label: r.label }))} value={range} onChange={setRange} />} />
      {error && <ErrorBox title="Could not load the dashboard" message={error} onRetry={load} />}
      {data?.incomplete && (
        <div className="banner banner-muted" role="status" data-testid="dashboard-incomplete">
          Only this gateway&apos;s traffic is counted: {data.incomplete}
        </div>
      )}
      {!data && !error && <Loading />}
      {data && (data.totals.requests === 0 && data.totals.holds.pending === 0 ? (
        // One pointer at the next step instead of six empty panels.
        <Empty icon="dashboard" title="Nothing went through the gateway in this window">
          <FirstSteps what="The charts fill in as requests are recorded." />
        </Empty>
      ) : (
        <Charts data={data} />
      ))}
    </div>
  );
}

function Charts({ data }: { data: DashboardData }) {
  const span = data.to - data.from;
  const labels = data.series.map((b) => bucketLabel(b.t, span));
  const t = data.totals;
  const totalMasked = data.maskedByType.reduce((a, b) => a + b.count, 0);
  return (
    <div className="dash" data-testid="dashboard">
      <div className="stat-grid">
        <Stat label="Requests" value={t.requests} sub={`${formatCount(t.sessions)} session${t.sessions === 1 ? '' : 's'}`} />
        <Stat label="Holds approved" value={t.holds.approved} tone="ok" sub={t.holds.pending ? `${t.holds.pending} pending now` : undefined} />
        <Stat label="Holds refused" value={t.holds.denied + t.holds.expired} tone="danger" sub={`${t.holds.denied} denied · ${t.holds.expired} timed out`} />
        <Stat label="Values masked" value={t.masked} tone="accent" sub={data.maskedByType[0] ? `most: ${data.maskedByType[0].type}` : undefined} />
        <Stat label="Denied by policy" value={t.denied} />
      </div>
      <div className="chart-grid">
        <ChartCard title="Requests">
          {t.requests ? <LineChart values={data.series.map((b) => b.requests)} labels={labels} color="var(--accent)" /> : <NoData />}
        </ChartCard>
        <ChartCard title="Holds by outcome" legend={[['Approved', 'var(--ok)'], ['Denied', 'var(--danger)'], ['Timed out', 'var(--warn)']]}>
          {t.holds.approved + t.holds.denied + t.holds.expired ? <BarChart columns={data.series.map((b) => [b.holdsApproved, b.holdsDenied, b.holdsExpired])} labels={labels} colors={['var(--ok)', 'var(--danger)', 'var(--warn)']} /> : <NoData />}
        </ChartCard>
        <ChartCard title="Masked values">
          {t.masked ? <BarChart columns={data.series.map((b) => [b.masked])} labels={labels} colors={['var(--mask)']} /> : <NoData />}
        </ChartCard>
        <ChartCard title="Masked by detector type">
          {totalMasked ? (
            <HBars rows={data.maskedByType.map((m) => ({ label: m.type, value: m.count }))} color="var(--mask)" testId="masked-by-type" />
          ) : (
            <NoData />
          )}
        </ChartCard>
        <ChartCard title="Policy rule hits" legend={[['Hits', 'var(--accent)'], ['Denied', 'var(--danger)']]}>
          {data.series.some((b) => b.hits) ? <LineChart values={data.series.map((b) => b.hits)} second={data.series.map((b) => b.denied)} labels={labels} color="var(--accent)" /> : <NoData />}
        </ChartCard>
        <ChartCard title="Top rules">
          {data.policyHits.length ? <HBars rows={data.policyHits.map((p) => ({ label: `${p.rule} · ${p.action}`, value: p.count }))} color="var(--accent)" /> : <NoData />}
        </ChartCard>
        {data.gateways && (
          <ChartCard title="Requests by gateway">
            <HBars
              rows={data.gateways.map((g) => ({ label: `${gatewayLabel(g.id, g.name)}${g.self ? ' (this one)' : ''}`, value: g.requests, title: `${g.id}: ${formatCount(g.sessions)} sessions, ${formatCount(g.masked)} masked, ${formatCount(g.denied)} denied` }))}
              color="var(--accent)"
              testId="requests-by-gateway"
            />
          </ChartCard>
        )}
      </div>
    </div>
  );
}

function Stat({ label, value, sub, tone }: { label: string; value: number; sub?: string; tone?: 'ok' | 'danger' | 'accent' }) {
  return (
    <div className={`stat${tone ? ` stat-${tone}` : ''}`}>
      <div className="stat-label">{label}</div>
      <div className="stat-value">{formatCount(value)}</div>
      {sub && <div className="muted small">{sub}</div>}
    </div>
  );
}

function ChartCard({ title, children, legend }: { title: string; children: React.ReactNode; legend?: [string, string][] }) {
  return (
    <section className="card chart-card">
      <div className="card-head">
        <h2>{title}</h2>
        {legend && (
          <div className="legend">
            {legend.map(([l, c]) => (
              <span key={l}>
                <i style={{ background: c }} /> {l}
              </span>
            ))}
          </div>
        )}
      </div>
      {children}
    </section>
  );
}

function NoData() {
  return <Empty icon="dashboard" title="Nothing in this window" />;
}

const H = 160;
const PAD = { left: 36, right: 8, top: 8, bottom: 22 };

function Axes({ width, axis, labels }: { width: number; axis: { max: number; ticks: number[] }; labels: string[] }) {
  const max = axis.max;
  const h = H - PAD.top - PAD.bottom;
  const w = width - PAD.left - PAD.right;
  const every = Math.max(1, Math.ceil(labels.length / Math.max(1, Math.floor(w / 56))));
  return (
    <g className="axes">
      {axis.ticks.map((v) => {
        const y = PAD.top + h - (v / max) * h;
        return (
          <g key={v}>
            <line x1={PAD.left} x2={width - PAD.right} y1={y} y2={y} className="grid" />
            <text x={PAD.left - 6} y={y + 3} textAnchor="end">
              {v >= 1000 ? `${Math.round(v / 100) / 10}k` : v}
            </text>
          </g>
        );
      })}
      {labels.map((l, i) =>
        i % every === 0 ? (
          <text key={i} x={PAD.left + (labels.length > 1 ? (i / (labels.length - 1)) * w : 0)} y={H - 6} textAnchor="middle">
            {l}
          </text>
        ) : null,
      )}
    </g>
  );
}

function LineChart({ values, second, labels, color }: { values: number[]; second?: number[]; labels: string[]; color: string }) {
  const [ref, width] = useWidth<HTMLDivElement>();
  const axis = countAxis(Math.max(...values, ...(second ?? [])));
  const max = axis.max;
  const box = { width: Math.max(10, width - PAD.left - PAD.right), height: H - PAD.top - PAD.bottom };
  return (
    <div ref={ref} className="chart">
      <svg width={width} height={H} role="img" aria-label="chart">
        <Axes width={width} axis={axis} labels={labels} />
        <g transform={`translate(${PAD.left},${PAD.top})`}>
          <path d={areaPath(values, box, max)} fill={color} opacity={0.12} />
          <path d={linePath(values, box, max)} fill="none" stroke={color} strokeWidth={1.75} />
          {second && <path d={linePath(second, box, max)} fill="none" stroke="var(--danger)" strokeWidth={1.5} strokeDasharray="4 3" />}
        </g>
      </svg>
    </div>
  );
}

function BarChart({ columns, labels, colors }: { columns: number[][]; labels: string[]; colors: string[] }) {
  const [ref, width] = useWidth<HTMLDivElement>();
  const axis = countAxis(Math.max(...columns.map((c) => c.reduce((a, b) => a + b, 0))));
  const box = { width: Math.max(10, width - PAD.left - PAD.right), height: H - PAD.top - PAD.bottom };
  const bars = stackedBars(columns, box, axis.max);
  return (
    <div ref={ref} className="chart">
      <svg width={width} height={H} role="img" aria-label="chart">
        <Axes width={width} axis={axis} labels={labels} />
        <g transform={`translate(${PAD.left},${PAD.top})`}>
          {bars.map((b, i) => (
            <rect key={i} x={b.x} y={b.y} width={b.width} height={b.height} fill={colors[b.series]} rx={1.5}>
              <title>{formatCount(b.value)}</title>
            </rect>
          ))}
        </g>
      </svg>
    </div>
  );
}

function HBars({ rows, color, testId }: { rows: { label: string; value: number; title?: string }[]; color: string; testId?: string }) {
  const max = Math.max(...rows.map((r) => r.value), 1);
  return (
    <div className="hbars" data-testid={testId}>
      {rows.slice(0, 8).map((r) => (
        <div key={r.label} className="hbar">
          <span className="hbar-label mono truncate" title={r.title ?? r.label}>
            {r.label}
          </span>
          <span className="hbar-track">
            <span style={{ width: `${(r.value / max) * 100}%`, background: color }} />
          </span>
          <span className="hbar-value">{formatCount(r.value)}</span>
        </div>
      ))}
    </div>
  );
}
