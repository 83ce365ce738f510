/**
 * Ready-to-copy client snippets for a connection: the client changes nothing but an address and a
 * key (DESIGN.md, HTTP routing and PostgreSQL; docs/SSH.md, Login). `key` is a placeholder unless
 * the user pasted one.
 */
import type { ConnectionView } from '../../shared/api';

export type SnippetConnection = Pick<ConnectionView, 'name' | 'kind' | 'listen'>;

export interface Snippet {
  id: 'openai' | 'anthropic' | 'langchain' | 'psql' | 'ssh' | 'curl';
  label: string;
  language: string;
  code: string;
}

/** `http://127.0.0.1:7421/<name>` */
export function proxyBase(httpListen: string, name: string): string {
  return `http://${httpListen}/${name}`;
}

/** Host and port of a `host:port` listen address (IPv6 brackets removed); `host` overrides the host. */
function listenAddress(listen: string, host: string | undefined): { host: string; port: string } {
  const colon = listen.lastIndexOf(':');
  return { host: host ?? listen.slice(0, colon).replace(/^\[|\]$/g, ''), port: listen.slice(colon + 1) };
}

export function snippetsFor(c: SnippetConnection, opts: { httpListen: string; key?: string; host?: string }): Snippet[] {
  const key = opts.key || 'cst_…your Custody API key…';
  const base = proxyBase(opts.httpListen, c.name);
  if (c.kind === 'ssh') {
    const { host, port } = listenAddress(c.listen ?? '127.0.0.1:2222', opts.host);
    // The login user is part of the upstream address; the client's user name is any name.
    return [{ id: 'ssh', label: 'ssh', language: 'sh', code: `# the password is your Custody API key\nssh -p ${port} $USER@${host}` }];
  }
  if (c.kind === 'postgres') {
    const { host, port } = listenAddress(c.listen ?? '127.0.0.1:6432', opts.host);
    return [
      { id: 'psql', label: 'psql', language: 'sh', code: `PGPASSWORD='${key}' psql "host=${host} port=${port} user=$USER dbname=postgres sslmode=prefer"` },
      {
        id: 'langchain',
        label: 'LangChain (SQLDatabase)',
        language: 'python',
        code: `from langchain_community.utilities import SQLDatabase\n\n# the password is your Custody API key; the gateway logs in upstream with the stored credential\ndb = SQLDatabase.from_uri("postgresql://agent:${encodeURIComponent(key)}@${host}:${port}/postgres")`,
      },
    ];
  }
  const out: Snippet[] = [];
  if (c.kind === 'openai' || c.kind === 'http') {
    out.push({
      id: 'openai',
      label: 'OpenAI SDK',
      language: 'ts',
      code: `import OpenAI from 'openai';\n\nconst client = new OpenAI({ baseURL: '${base}', apiKey: '${key}' });\nconst r = await client.chat.completions.create({\n  model: 'gpt-4o-mini',\n  messages: [{ role: 'user', content: 'Hello' }],\n});`,
    });
  }
  if (c.kind === 'anthropic' || c.kind === 'http') {
    out.push({
      id: 'anthropic',
      label: 'Anthropic SDK',
      language: 'ts',
      code: `import Anthropic from '@anthropic-ai/sdk';\n\nconst client = new Anthropic({ baseURL: '${base}', apiKey: '${key}' });\nconst r = await client.messages.create({\n  model: 'claude-sonnet-4-5',\n  max_tokens: 1024,\n  messages: [{ role: 'user', content: 'Hello' }],\n});`,
    });
  }
  if (c.kind === 'openai' || c.kind === 'http')
    out.push({
      id: 'langchain',
      label: 'LangChain',
      language: 'python',
      code: `from langchain_openai import ChatOpenAI\n\nllm = ChatOpenAI(model="gpt-4o-mini", base_url="${base}", api_key="${key}")\nllm.invoke("Hello")`,
    });
  else if (c.kind === 'anthropic')
    out.push({
      id: 'langchain',
      label: 'LangChain',
      language: 'python',
      code: `from langchain_anthropic import ChatAnthropic\n\nllm = ChatAnthropic(model="claude-sonnet-4-5", base_url="${base}", api_key="${key}")\nllm.invoke("Hello")`,
    });
  out.push({ id: 'curl', label: 'curl', language: 'sh', code: `curl ${base}/${c.kind === 'anthropic' ? 'v1/messages' : 'models'} -H 'Authorization: Bearer ${key}'` });
  return out;
}
