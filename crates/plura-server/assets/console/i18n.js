// Labels of the console in English and Korean (the seed's users read Korean).
const LABELS = {
  en: {
    title: 'System Management', product: 'PLURA Fleet', signIn: 'Sign in', signOut: 'Sign out',
    tokenLabel: 'API token', tokenHint: 'plura-server token create --role admin|operator|monitor',
    badToken: 'That token was not accepted.', role: 'Role',
    withToken: 'API token', withPassword: 'User / password', username: 'User', password: 'Password',
    monitor: 'monitor', operator: 'operator', admin: 'admin',
    registered: 'Registered', onOff: 'ON / OFF', running: 'Running', stopped: 'Stopped',
    unknown: 'Unknown', perKind: 'Per kind', perOs: 'Per OS',
    no: 'NO', on: 'ON', off: 'OFF', status: 'Status', version: 'Version', group: 'Group',
    ip: 'Host IP', hostname: 'Hostname', os: 'OS', kind: 'Kind', registeredAt: 'Registered',
    lastSeen: 'Last seen', lastLogin: 'Last login', machineId: 'Machine ID', sourceIp: 'Source IP',
    any: 'All', search: 'Search IP, hostname, group, OS…', perPage: 'per page', csv: 'CSV',
    selectAgent: 'Select {name}',
    assignGroup: 'Assign group', groupPrompt: 'Group for the selected agents (empty: none)',
    delete: 'Delete', confirmDelete: 'Delete {n} agent(s)? Their history goes too.',
    register: 'Register', registerTitle: 'Register a system',
    cancel: 'Cancel', save: 'Save', total: '{n} agents', totalOver: 'More than {n} agents', page: 'Page {p} of {n}',
    pageOpen: 'Page {p}',
    prev: 'Previous', next: 'Next', details: 'Details', history: 'History', close: 'Close',
    noAgents: 'No agents match.', live: 'Live', offline: 'Reconnecting…', none: '(none)',
    event: 'Event', at: 'Time', detail: 'Detail', language: '한국어', takenOver: 'Taken over',
    agents: 'Agents', alerts: 'Alerts', audit: 'Audit log', overTime: 'The fleet over time',
    range1h: '1 h', range24h: '24 h', range7d: '7 d', noSamples: 'No samples yet in this range.',
    zone: 'Zone', asg: 'Auto Scaling group', instanceId: 'Instance ID', instanceType: 'Instance type',
    sourceDiffers: 'Source ≠ IP', via: 'via',
    sourceDiffersHint: 'The last login came from another address than the one the agent claims (NAT, a proxy, or a host speaking for another).',
    webhooks: 'Webhooks', deliveries: 'Recent deliveries', url: 'URL', format: 'Format', origin: 'Added by',
    addWebhook: 'Add webhook', secretOptional: 'Signing secret (optional)',
    secretOnce: 'Signing secret (HMAC-SHA256, header X-Plura-Signature-256), shown only now:',
    confirmWebhookDelete: 'Delete this webhook and its deliveries?', noWebhooks: 'No webhooks: alerts are kept but sent nowhere.',
    noDeliveries: 'No alerts sent yet.', state: 'State', attempts: 'Tries', lastError: 'Last error',
    actor: 'Who', action: 'Action', pending: 'retrying', delivered: 'delivered', failed: 'failed',
    agent_stopped: 'stopped unexpectedly', agent_taken_over: 'taken over', agent_back: 'back',
    enabled: 'switched ON', disabled: 'switched OFF', group_changed: 'group changed', deleted: 'deleted',
    pruned: 'pruned', token_created: 'token created', user_created: 'user created',
    enrollment_token_rotated: 'enrollment token', webhook_added: 'webhook added', webhook_deleted: 'webhook deleted',
    people: 'Users and tokens', apiTokens: 'API tokens', users: 'Console users', name: 'Name',
    lastUsed: 'Last used', expires: 'Expires', never: 'never', expired: 'expired', revoke: 'Revoke',
    confirmRevoke: 'Revoke the token {name}? Whatever uses it stops working within a second.',
    noTokens: 'No API tokens.', lastSignIn: 'Last sign-in', signIns: 'Signed in',
    userDisabled: 'disabled', userEnabled: 'may sign in', enable: 'Enable', disable: 'Disable',
    setPassword: 'New password', newPassword: 'New password for {name} (at least 12 characters; ends its sign-ins)',
    confirmDisable: 'Disable {name}? Its sign-ins end now.', confirmUserDelete: 'Delete the user {name}? Its sign-ins end now.',
    noUsers: 'No console users.', tokenOnce: 'The new token, shown only now:', passwordOnce: 'The new password, shown only now:',
    tokenName: 'Token name', days: '{n} days', createToken: 'Create token', createUser: 'Create user',
    passwordOptional: 'Password (optional: one is made)',
    token_revoked: 'token revoked', user_disabled: 'user disabled', user_enabled: 'user enabled',
    user_deleted: 'user deleted', password_changed: 'password changed',
  },
  ko: {
    title: '시스템 관리', product: 'PLURA Fleet', signIn: '로그인', signOut: '로그아웃',
    tokenLabel: 'API 토큰', tokenHint: 'plura-server token create --role admin|operator|monitor',
    badToken: '토큰이 올바르지 않습니다.', role: '권한',
    withToken: 'API 토큰', withPassword: '사용자 / 비밀번호', username: '사용자', password: '비밀번호',
    monitor: '모니터', operator: '운영자', admin: '관리자',
    registered: '등록', onOff: 'ON / OFF', running: '실행 중', stopped: '중지',
    unknown: '알 수 없음', perKind: '종류별', perOs: 'OS별',
    no: 'NO', on: 'ON', off: 'OFF', status: '상태', version: '버전', group: '그룹',
    ip: '호스트 IP', hostname: '호스트명', os: 'OS', kind: '종류', registeredAt: '등록일',
    lastSeen: '마지막 응답', lastLogin: '마지막 로그인', machineId: '머신 ID', sourceIp: '접속 IP',
    any: '전체', search: 'IP, 호스트명, 그룹, OS 검색…', perPage: '개씩', csv: 'CSV',
    selectAgent: '{name} 선택',
    assignGroup: '그룹 지정', groupPrompt: '선택한 에이전트의 그룹 (비우면 없음)',
    delete: '삭제', confirmDelete: '에이전트 {n}개를 삭제할까요? 이력도 함께 삭제됩니다.',
    register: '등록', registerTitle: '시스템 등록',
    cancel: '취소', save: '저장', total: '에이전트 {n}개', totalOver: '에이전트 {n}개 초과', page: '{p} / {n} 페이지',
    pageOpen: '{p} 페이지',
    prev: '이전', next: '다음', details: '상세', history: '이력', close: '닫기',
    noAgents: '일치하는 에이전트가 없습니다.', live: '실시간', offline: '다시 연결 중…', none: '(없음)',
    event: '이벤트', at: '시각', detail: '내용', language: 'English', takenOver: '인계됨',
    agents: '에이전트', alerts: '알림', audit: '감사 로그', overTime: '시간별 에이전트 현황',
    range1h: '1시간', range24h: '24시간', range7d: '7일', noSamples: '이 기간에 수집된 값이 없습니다.',
    zone: '가용 영역', asg: 'Auto Scaling 그룹', instanceId: '인스턴스 ID', instanceType: '인스턴스 유형',
    sourceDiffers: '접속 IP ≠ IP', via: '접속',
    sourceDiffersHint: '마지막 로그인이 에이전트가 밝힌 주소가 아닌 다른 주소에서 왔습니다 (NAT, 프록시, 또는 다른 호스트).',
    webhooks: '웹훅', deliveries: '최근 전송', url: 'URL', format: '형식', origin: '추가한 사람',
    addWebhook: '웹훅 추가', secretOptional: '서명 비밀 (선택)',
    secretOnce: '서명 비밀 (HMAC-SHA256, X-Plura-Signature-256 헤더). 지금만 표시됩니다:',
    confirmWebhookDelete: '이 웹훅과 전송 기록을 삭제할까요?', noWebhooks: '웹훅 없음: 알림은 기록되지만 전송되지 않습니다.',
    noDeliveries: '아직 보낸 알림이 없습니다.', state: '상태', attempts: '시도', lastError: '마지막 오류',
    actor: '누가', action: '작업', pending: '재시도 중', delivered: '전송됨', failed: '실패',
    agent_stopped: '비정상 중지', agent_taken_over: '인계됨', agent_back: '복귀',
    enabled: 'ON 전환', disabled: 'OFF 전환', group_changed: '그룹 변경', deleted: '삭제',
    pruned: '정리됨', token_created: '토큰 생성', user_created: '사용자 생성',
    enrollment_token_rotated: '등록 토큰', webhook_added: '웹훅 추가', webhook_deleted: '웹훅 삭제',
    people: '사용자와 토큰', apiTokens: 'API 토큰', users: '콘솔 사용자', name: '이름',
    lastUsed: '마지막 사용', expires: '만료', never: '없음', expired: '만료됨', revoke: '폐기',
    confirmRevoke: '{name} 토큰을 폐기할까요? 이 토큰을 쓰는 곳은 1초 안에 멈춥니다.',
    noTokens: 'API 토큰이 없습니다.', lastSignIn: '마지막 로그인', signIns: '로그인 중',
    userDisabled: '비활성', userEnabled: '로그인 가능', enable: '활성화', disable: '비활성화',
    setPassword: '새 비밀번호', newPassword: '{name}의 새 비밀번호 (12자 이상, 기존 로그인은 종료됩니다)',
    confirmDisable: '{name}을(를) 비활성화할까요? 로그인이 바로 종료됩니다.', confirmUserDelete: '{name} 사용자를 삭제할까요? 로그인이 바로 종료됩니다.',
    noUsers: '콘솔 사용자가 없습니다.', tokenOnce: '새 토큰입니다. 지금만 표시됩니다:', passwordOnce: '새 비밀번호입니다. 지금만 표시됩니다:',
    tokenName: '토큰 이름', days: '{n}일', createToken: '토큰 만들기', createUser: '사용자 만들기',
    passwordOptional: '비밀번호 (선택: 비우면 생성)',
    token_revoked: '토큰 폐기', user_disabled: '사용자 비활성화', user_enabled: '사용자 활성화',
    user_deleted: '사용자 삭제', password_changed: '비밀번호 변경',
  },
};

let current = (localStorage.getItem('plura.lang') ||
  (navigator.language || 'en').slice(0, 2)) === 'ko' ? 'ko' : 'en';

export function lang() {
  return current;
}

export function toggleLang() {
  current = current === 'ko' ? 'en' : 'ko';
  localStorage.setItem('plura.lang', current);
  document.documentElement.lang = current;
}

/** The label `key` in the current language, with `{name}` placeholders filled from `values`. */
export function t(key, values = {}) {
  const text = LABELS[current][key] ?? LABELS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ''));
}
