// The Vercel AI SDK (`ai` 6 + `@ai-sdk/openai` 3, pinned in package.json) against the proxy, with its default
// settings: the Responses API, `store` unset (so earlier output goes back as item_reference). Driven by
// test_vercel_ai_sdk.py, which scripts the fake DeepSeek and checks what reached it. Prints one JSON line.
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';

const [baseUrl, modelId] = process.argv.slice(2);
const openai = createOpenAI({ baseURL: `${baseUrl}/v1`, apiKey: 'unused' });
const model = openai(modelId);

const listFiles = tool({
  description: 'List the files of a directory',
  inputSchema: jsonSchema({ type: 'object', properties: { dir: { type: 'string' } }, required: ['dir'] }),
  execute: async ({ dir }) => `a.txt b.txt in ${dir}`,
});

// 1. A multi-step tool loop: the model calls the tool, the SDK runs it and sends the result back.
const first = await generateText({
  model, prompt: 'What is in the current directory?', tools: { list_files: listFiles }, stopWhen: stepCountIs(5),
});

// 2. A second chat turn on the conversation so far.
const second = await generateText({
  model,
  messages: [{ role: 'user', content: 'What is in the current directory?' }, ...first.response.messages,
    { role: 'user', content: 'Thanks. Which one is larger?' }],
});

// 3. Streamed, with reasoning summaries asked for: the SDK shows reasoning only from summaries.
const streamed = streamText({
  model, prompt: 'Say hi.', providerOptions: { openai: { reasoningSummary: 'auto', forceReasoning: true } },
});
let reasoning = '';
let text = '';
for await (const part of streamed.fullStream) {
  if (part.type === 'reasoning-delta') reasoning += part.text;
  if (part.type === 'text-delta') text += part.text;
  if (part.type === 'error') throw part.error;
}

console.log(JSON.stringify({
  steps: first.steps.length,
  toolResults: first.steps.flatMap((s) => s.toolResults.map((r) => r.output)),
  firstText: first.text,
  secondText: second.text,
  streamedText: text,
  streamedReasoning: reasoning,
  finishReasons: [first.finishReason, second.finishReason, await streamed.finishReason],
  warnings: [...(first.warnings ?? []), ...(second.warnings ?? [])].map((w) => w.type),
}));
